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
        settings = ServeSettings(run=str(run), max_batch=max_batch, max_wait_ms=200)
        with BackgroundServer(settings) as server:
            with ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(lambda _: _post(server.url, data), range(16)))
            text = server.app.state.metrics.render()
        assert all(status == 200 for status, _ in answers)
        assert len({json.dumps(b["predictions"][0]["top"]) for _, b in answers}) == 1
        assert prometheus_value(text, "vggnet_batch_size_sum") == 16
        batch_counts[max_batch] = prometheus_value(text, "vggnet_batch_size_count")
    assert batch_counts[1] == 16
    assert batch_counts[16] <= 8  # sixteen concurrent requests, at least two per pass


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


def test_drain_finishes_requests_in_flight_and_refuses_new_ones(run, images):
    settings = ServeSettings(run=str(run), max_batch=64, max_wait_ms=1500)
    data = images[0].read_bytes()
    with BackgroundServer(settings) as server:
        slow = ThreadPoolExecutor(1).submit(_post, server.url, data)  # waits 1.5 s for a batch
        time.sleep(0.5)
        server.drain()
        status, body = _post(server.url, data)
        assert status == 503 and "shutting down" in body["detail"]
        assert slow.result(timeout=30)[0] == 200
        server.thread.join(10)
        assert not server.thread.is_alive()  # it stopped by itself once nothing was in flight


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_drains_the_real_command(run, images):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vggnet", "serve", str(run), "--port", str(port),
         "--max-wait-ms", "2000", "--max-batch", "64", "--no-access-log"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
                time.sleep(0.1)
        slow = ThreadPoolExecutor(1).submit(_post, url, images[0].read_bytes())
        time.sleep(0.7)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert _post(url, images[0].read_bytes())[0] == 503
        assert slow.result(timeout=30)[0] == 200
        assert proc.wait(timeout=30) == 0
        assert "draining" in proc.stdout.read()
    finally:
        proc.kill()


def test_several_workers_share_one_port(run, images):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vggnet", "serve", str(run), "--port", str(port),
         "--workers", "2", "--no-access-log"], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
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
        proc.send_signal(signal.SIGTERM)  # passed on to both workers, which drain and exit
        assert proc.wait(timeout=60) == 0
        assert not any(Path(f"/proc/{w}").exists() for w in workers)
    finally:
        proc.kill()


def test_workers_do_not_outlive_a_killed_supervisor(run):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "vggnet", "serve", str(run), "--port",
                             str(port), "--workers", "2"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
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
