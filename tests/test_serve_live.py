"""`vggnet serve` as a live HTTP server and as the real command: concurrent requests share
forward passes, oversized uploads are refused before they arrive, draining (by call and by
SIGTERM) finishes what is in flight, and worker processes share a port and die with their
supervisor."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from vggnet.serve import BackgroundServer, ServeSettings  # noqa: E402

from helpers import prometheus_value, serve_images, train_tiny_run  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("serve_live") / "run")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return serve_images(tmp_path_factory.mktemp("serve_live_images"))


def _post(url: str, data: bytes, timeout: float = 60) -> tuple[int, dict]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    conn.request("POST", "/v1/predict", body=data, headers={"content-type": "image/png"})
    r = conn.getresponse()
    body = json.loads(r.read())
    conn.close()
    return r.status, body


def test_concurrent_requests_share_forward_passes_on_a_live_server(run, images):
    data = images[0].read_bytes()
    batch_counts = {}
    for max_batch in (1, 16):
        # a batch closes when it is full, so sixteen requests make one pass of 16 however slowly
        # a loaded machine sends them (the wait is only a bound, never reached)
        settings = ServeSettings(run=str(run), max_batch=max_batch, max_wait_ms=120_000)
        with BackgroundServer(settings) as server:
            with ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(lambda _: _post(server.url, data), range(16)))
            text = server.app.state.metrics.render()
        assert all(status == 200 for status, _ in answers)
        assert len({json.dumps(b["predictions"][0]["top"]) for _, b in answers}) == 1
        assert prometheus_value(text, "vggnet_batch_size_sum") == 16
        batch_counts[max_batch] = prometheus_value(text, "vggnet_batch_size_count")
    assert batch_counts == {1: 16, 16: 1}


def test_a_background_server_leaves_the_processs_logging_alone(run, tmp_path):
    """uvicorn's own logging configuration closes every handler of the process first (found
    when a library's handler, closing, closed the stream under it): a service started inside
    someone else's program must not install it."""
    import logging

    class Recording(logging.StreamHandler):
        closed = False

        def close(self):
            self.closed = True
            super().close()

    handler = Recording(open(tmp_path / "log.txt", "w"))
    logging.getLogger().addHandler(handler)
    try:
        with BackgroundServer(ServeSettings(run=str(run))) as server:
            assert _healthz(server.url)[0] == 200
        assert handler in logging.getLogger().handlers and not handler.closed
    finally:
        logging.getLogger().removeHandler(handler)
        handler.stream.close()


def test_upload_over_the_limit_is_refused_before_it_is_sent_whole(run):
    with BackgroundServer(ServeSettings(run=str(run), max_upload_mb=1)) as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                      b"Content-Length: 1000000000\r\n\r\n" + b"\0" * 1000)
            reply = b""  # answered although 999,999,000 bytes never came
            while b"upload too large" not in reply:
                chunk = s.recv(65536)  # headers and body may come in separate packets
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 413") and b"upload too large" in reply
        status, _ = _post(server.url, b"")  # and it keeps serving
        assert status == 422


class _Gate:
    """Wraps the served network: a call says it has begun (``entered``) and then waits until
    the test ``release``s it, so a request stays in flight exactly as long as a test needs."""

    def __init__(self, model):
        self.model, self.entered, self.release = model, threading.Event(), threading.Event()

    def __call__(self, x):
        self.entered.set()
        assert self.release.wait(120), "the test never released the model"
        return self.model(x)


def _gate(server) -> _Gate:
    predictor = server.app.state.model.predictor
    predictor.engine = _Gate(predictor.engine)
    return predictor.engine


def _wait_until(predicate, what: str, timeout: float = 120, proc=None):
    """Poll an observable state (never a fixed sleep); fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited while waiting for {what}:\n"
                                 f"{proc.stdout.read()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _partial_upload(url: str, data: bytes) -> socket.socket:
    """A raw POST whose headers and first half of the body are sent, the rest held back."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=120)
    s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
              b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(data)
              + data[:len(data) // 2])
    return s


def _finish_upload(s: socket.socket, data: bytes) -> tuple[int, dict]:
    s.sendall(data[len(data) // 2:])
    reply = b""
    while chunk := s.recv(65536):
        reply += chunk
    s.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _healthz(url: str) -> tuple[int, dict]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("GET", "/healthz")
    r = conn.getresponse()
    body = json.loads(r.read())
    conn.close()
    return r.status, body


def test_drain_finishes_requests_in_flight_and_refuses_new_ones(run, images):
    data = images[0].read_bytes()
    with BackgroundServer(ServeSettings(run=str(run), max_wait_ms=0)) as server:
        gate = _gate(server)
        slow = ThreadPoolExecutor(1).submit(_post, server.url, data)
        assert gate.entered.wait(120)  # the first request is inside the model
        server.drain()
        status, body = _post(server.url, data)
        assert status == 503 and "shutting down" in body["detail"]
        assert _healthz(server.url)[0] == 503
        assert server.thread.is_alive()  # still serving what is in flight
        gate.release.set()
        assert slow.result(timeout=120)[0] == 200
        server.thread.join(60)
        assert not server.thread.is_alive()  # it stopped by itself once nothing was in flight


def test_drain_serves_a_request_still_uploading_its_body(run, images):
    """Admission is decided when a request's headers arrive: one admitted before the drain
    is served even if the rest of its body comes after it."""
    data = images[1].read_bytes()
    with BackgroundServer(ServeSettings(run=str(run), max_wait_ms=0)) as server:
        state = server.app.state.service
        upload = _partial_upload(server.url, data)
        _wait_until(lambda: state.inflight == 1, "the partial upload to be admitted")
        server.drain()
        assert _post(server.url, data)[0] == 503
        status, body = _finish_upload(upload, data)
        assert status == 200 and body["predictions"][0]["top"]
        server.thread.join(60)
        assert not server.thread.is_alive()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_drains_the_real_command(run, images):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vggnet", "serve", str(run), "--port", str(port),
         "--drain-timeout", "300", "--no-access-log"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    data = images[0].read_bytes()
    try:
        _wait_until(lambda: _port_open(port), "the server to listen", proc=proc)
        # a request in flight for as long as the test holds back the end of its body
        upload = _partial_upload(url, data)
        _wait_until(lambda: _healthz(url)[1]["inflight"] == 1, "the upload to be admitted",
                    proc=proc)
        proc.send_signal(signal.SIGTERM)
        _wait_until(lambda: _healthz(url)[0] == 503, "the server to start draining", proc=proc)
        assert _post(url, data)[0] == 503
        assert _finish_upload(upload, data)[0] == 200
        assert proc.wait(timeout=120) == 0
        assert "draining" in proc.stdout.read()
    finally:
        proc.kill()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_several_workers_share_one_port(run, images):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vggnet", "serve", str(run), "--port", str(port),
         "--workers", "2", "--no-access-log"], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300  # two workers importing torch on a loaded machine
        while True:
            try:
                status, _ = _post(f"http://127.0.0.1:{port}", images[0].read_bytes(), 5)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
                time.sleep(0.2)
        assert status == 200
        workers = _workers_of(proc.pid)
        assert len(workers) == 2
        url = f"http://127.0.0.1:{port}"
        _requests_pass_through_the_front_unchanged(port, images[0].read_bytes())
        # three predictions answered so far, spread over both workers (ties take turns): the
        # front's /metrics sums them; the 413 above was the front's own
        _wait_until(lambda: _predicted(url) >= 3, "the workers to count their answers",
                    proc=proc)
        text = _metrics(url)
        assert _predicted(url) == 3 and prometheus_value(text, "vggnet_images_total") == 3
        assert prometheus_value(text, "vggnet_front_errors_total",
                                reason="upload_too_large") == 1
        # a client that goes away mid-upload is nobody's failure, and frees its place
        _partial_upload(url, images[1].read_bytes()).close()
        _wait_until(lambda: _healthz(url)[1]["inflight"] == 0, "the abandoned upload to end",
                    proc=proc)
        # drain happens in front of the workers: an upload admitted before it is finished
        upload = _partial_upload(url, images[1].read_bytes())
        _wait_until(lambda: _healthz(url)[1]["inflight"] == 1, "the upload to be admitted",
                    proc=proc)
        proc.send_signal(signal.SIGTERM)
        _wait_until(lambda: _healthz(url)[0] == 503, "the service to drain", proc=proc)
        assert _post(url, images[0].read_bytes())[0] == 503
        # the front still answers /metrics while draining, and counted that refusal
        assert prometheus_value(_metrics(url), "vggnet_front_errors_total",
                                reason="draining") == 1
        assert _finish_upload(upload, images[1].read_bytes())[0] == 200
        assert proc.wait(timeout=60) == 0  # then the workers were stopped, and exited
        assert "failed a request" not in proc.stdout.read()
        assert not any(Path(f"/proc/{w}").exists() for w in workers)
    finally:
        proc.kill()


def _metrics(url: str) -> str:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("GET", "/metrics")
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("content-type").startswith("text/plain")
    text = r.read().decode()
    conn.close()
    return text


def _predicted(url: str) -> float:
    """Predictions answered with 200, as the service's /metrics counts them."""
    return prometheus_value(_metrics(url), "vggnet_requests_total", route="/v1/predict",
                            method="POST", status="200")


def _requests_pass_through_the_front_unchanged(port: int, data: bytes) -> None:
    """The page, JSON, query strings, a chunked upload (no Content-Length) and several
    requests on one keep-alive connection, through the front to a worker and back."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/")
    r = conn.getresponse()
    assert r.status == 200 and b"<html" in r.read().lower()
    conn.request("GET", "/v1/model")
    r = conn.getresponse()
    assert r.status == 200 and "classes" in json.loads(r.read())
    conn.request("POST", "/v1/predict?top_k=2", body=data,
                 headers={"content-type": "image/png"})
    r = conn.getresponse()
    assert r.status == 200 and len(json.loads(r.read())["predictions"][0]["top"]) == 2
    conn.request("POST", "/v1/predict", body=iter([data[:100], data[100:]]),
                 headers={"content-type": "image/png"}, encode_chunked=True)
    r = conn.getresponse()
    assert r.status == 200 and json.loads(r.read())["predictions"][0]["top"]
    conn.request("POST", "/v1/predict", body=b"not an image",
                 headers={"content-type": "image/png"})
    r = conn.getresponse()  # the worker's own 4xx JSON, passed on
    assert 400 <= r.status < 500 and json.loads(r.read())["detail"]
    conn.close()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                  b"Content-Length: 1000000000\r\n\r\n")
        reply = b""
        while b"upload too large" not in reply and (chunk := s.recv(65536)):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413") and b"upload too large" in reply


def test_a_worker_killed_mid_request_fails_only_its_own_requests(run, images):
    """SIGKILL one of two workers while requests wait on it: exactly those requests get a 502
    JSON answer, every other one (before, during and after) is served, and a new worker takes
    the dead one's place. The front's /metrics still counts what the dead worker answered."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vggnet", "serve", str(run), "--port", str(port),
         "--workers", "2", "--backend", "torch", "--no-access-log"], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    data = images[0].read_bytes()
    pool = ThreadPoolExecutor(16)

    def workers():
        return _healthz(url)[1]["workers"]

    def waiting_on(pid):
        return next(w["inflight"] for w in workers() if w["pid"] == pid)

    try:
        _wait_until(lambda: _port_open(port) and sum(w["ready"] for w in workers()) == 2,
                    "two ready workers", proc=proc, timeout=300)
        # four answered before anything goes wrong, two by each worker (ties take turns)
        first = [_post(url, data, 300) for _ in range(4)]
        assert all(status == 200 for status, _ in first)
        _wait_until(lambda: _predicted(url) == 4, "the workers to count their answers",
                    proc=proc)
        victim = workers()[0]["pid"]
        os.kill(victim, signal.SIGSTOP)  # it takes connections but answers nothing
        sent = []

        def settled():  # every request sent is either answered or waiting on the victim
            return sum(f.done() for f in sent) + waiting_on(victim) == len(sent)

        # one at a time until one waits on the stopped worker (ties between the workers take
        # turns), then a few at once, which the front spreads over both
        while waiting_on(victim) < 1:
            assert len(sent) < 20, "the front never sent a request to the stopped worker"
            sent.append(pool.submit(_post, url, data, 300))
            _wait_until(settled, "the request to be answered or to wait", proc=proc)
        sent += [pool.submit(_post, url, data, 300) for _ in range(6)]
        _wait_until(settled, "the requests to be answered or to wait", proc=proc)
        stuck = waiting_on(victim)
        os.kill(victim, signal.SIGKILL)  # out of memory, say
        _wait_until(lambda: victim not in [w["pid"] for w in workers() if w["ready"]],
                    "the front to see the worker gone", proc=proc)
        during = [pool.submit(_post, url, data, 300) for _ in range(8)]
        answers = [f.result(timeout=300) for f in sent + during]
        failed = [body for status, body in answers if status != 200]
        assert len(failed) == stuck
        assert all(status in (200, 502) for status, _ in answers)
        assert all(f"pid {victim}" in b["detail"] and "send it again" in b["detail"]
                   for b in failed)
        _wait_until(lambda: sum(w["ready"] for w in workers()) == 2
                    and victim not in [w["pid"] for w in workers()],
                    "a replacement worker", proc=proc, timeout=300)
        assert all(f.result(timeout=300)[0] == 200
                   for f in [pool.submit(_post, url, data, 300) for _ in range(8)])
        served = len(first) + len(answers) - len(failed) + 8
        _wait_until(lambda: _predicted(url) >= served, "the workers to count their answers",
                    proc=proc)
        text = _metrics(url)  # the dead worker's counts are kept in the sum
        assert _predicted(url) == served
        assert prometheus_value(text, "vggnet_front_errors_total", reason="worker_failed") \
            == stuck
        assert prometheus_value(text, "vggnet_worker_restarts_total") == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
        log = proc.stdout.read()
        assert "starting another" in log
        assert "HTTP Request" not in log  # no line per forwarded request (a full pipe stalls)
    finally:
        proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)


def test_workers_do_not_outlive_a_killed_supervisor(run):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "vggnet", "serve", str(run), "--port",
                             str(port), "--workers", "2"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300  # a generous bound on a loaded machine
    while len(_workers_of(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = _workers_of(proc.pid)
    assert len(workers) == 2
    proc.kill()  # SIGKILL: the supervisor cannot pass anything on
    proc.wait()
    deadline = time.monotonic() + 120  # a worker still importing torch on a loaded machine
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(Path(f"/proc/{w}").exists() for w in workers)


def test_folders_left_by_a_killed_supervisor_are_removed_by_the_next(tmp_path, monkeypatch):
    from vggnet.serve.proxy import WorkerPool

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    left = tmp_path / f"vggnet-serve-{gone}-x1y2"  # its supervisor was SIGKILLed
    (left / "metrics").mkdir(parents=True)
    (left / "w0-1.sock").touch()
    alive = tmp_path / f"vggnet-serve-{os.getppid()}-z3"  # another supervisor, still serving
    alive.mkdir()
    other = tmp_path / "vggnet-serve-notapid"
    other.mkdir()
    pool = WorkerPool(None, (), 2)
    try:
        assert not left.exists() and alive.is_dir() and other.is_dir()
        assert pool.folder.name.startswith(f"vggnet-serve-{os.getpid()}-")
    finally:
        pool.kill()
    assert not pool.folder.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_a_worker_whose_supervisor_is_already_gone_ends_itself():
    # the supervisor died before the worker reached prctl: the worker now has another parent
    # (init or a subreaper), so it must not go on to serve
    code = ("import time; from vggnet.serve.server import _die_with_parent; "
            "_die_with_parent(-1); time.sleep(30)")
    done = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert done.returncode == -signal.SIGTERM
    alive = ("import os; from vggnet.serve.server import _die_with_parent; "
             "_die_with_parent(os.getppid()); print('serving')")
    assert subprocess.run([sys.executable, "-c", alive], capture_output=True, text=True,
                          timeout=60).stdout == "serving\n"


def _workers_of(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children
            if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def test_workers_that_die_as_they_start_stop_the_service_with_a_clear_error(tmp_path,
                                                                           monkeypatch):
    """A worker that cannot load its model (here the run folder is gone) is restarted a few
    times, then the supervisor gives up with one line instead of restarting forever."""
    from vggnet.errors import VggnetError
    from vggnet.serve.server import _supervise

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where its sockets go
    settings = ServeSettings(run=str(tmp_path / "gone"))
    with pytest.raises(VggnetError, match="kept dying as they started"):
        _supervise(settings, "127.0.0.1", 0, 2, "critical", False)
    assert not list(tmp_path.glob("vggnet-serve-*"))  # nothing left behind


def test_a_retry_after_a_failed_connect_goes_to_another_ready_worker(tmp_path):
    """The front retries a request whose worker could not be reached on another ready
    worker, never on the one it just tried, even when that one is the least busy."""
    from vggnet.serve.proxy import Worker, WorkerPool

    class Proc:
        exitcode, pid = None, 1

    pool = WorkerPool.__new__(WorkerPool)
    pool.workers, pool.count, pool.turn = [], 2, 0
    for i in range(2):
        (tmp_path / f"w{i}.sock").touch()  # a ready worker's socket exists
        pool.workers.append(Worker(i, Proc(), tmp_path / f"w{i}.sock"))
    idle, busy = pool.workers
    busy.inflight = 5
    assert pool.pick() is idle
    assert pool.pick(exclude={idle}) is busy
    assert pool.pick(exclude={idle, busy}) is None
