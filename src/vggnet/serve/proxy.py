"""The front of ``vggnet serve --workers N``: one process owns the port and forwards each
request to the least busy of N worker processes.

Each worker is a whole service (its own model, batcher and metrics) listening on a Unix socket
in a private temporary folder; its socket file appears once its model is loaded, so a worker
gets requests only when it can answer them. Because the front holds every client connection,
a worker that dies in the middle of requests (SIGKILL, out of memory) costs its clients a
``502`` JSON answer that says what happened, not a reset connection, while requests on the
other workers go on and the worker is replaced. A request not yet sent to a worker that turns
out to be gone is sent to another one instead.

Drain (SIGTERM, or a first Ctrl-C) happens here first: new requests get 503, those in flight
(admitted when their headers arrived, even if their body is still coming) are finished, and
only then are the workers told to stop.

``GET /healthz`` and ``GET /metrics`` are the front's own: every worker's state, and the
workers' counters summed (see :mod:`vggnet.serve.metrics`), answered even while draining.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from .app import ServeSettings, ServiceState, _too_large
from .metrics import FrontMetrics
from .upstream import ClientGone, ConnectFailed, Upstream, UpstreamError

log = logging.getLogger(__name__)

# a worker that dies within this many seconds of its start counts as failing to start; after
# this many such deaths in a row the supervisor gives up instead of restarting forever
QUICK_DEATH_S, QUICK_DEATHS = 30.0, 3
# headers that describe one connection, not the request, so they are not passed on
# (and "expect": the front has already said "100 Continue" to the client itself)
HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"te",
              b"proxy-connection", b"host", b"expect"}


class Worker:
    """One worker process, the socket it will listen on and the requests sent to it."""

    def __init__(self, index: int, proc, path: Path):
        self.index, self.proc, self.path = index, proc, path
        self.inflight, self.started_at = 0, time.monotonic()
        self.upstream = Upstream(path)

    @property
    def ready(self) -> bool:
        return self.proc.exitcode is None and self.path.exists()

    def describe(self) -> dict:
        return {"index": self.index, "pid": self.proc.pid, "ready": self.ready,
                "inflight": self.inflight}


class WorkerPool:
    """Starts ``count`` workers, replaces one that dies, and stops them all."""

    def __init__(self, target, args: tuple, count: int):
        self.target, self.args, self.count = target, args, count
        _remove_folders_of_dead_supervisors()
        self.folder = Path(tempfile.mkdtemp(prefix=f"vggnet-serve-{os.getpid()}-"))
        self.metrics_folder = self.folder / "metrics"  # the workers' counters, in files
        self.metrics_folder.mkdir()
        self.metrics = FrontMetrics()
        self.ctx = multiprocessing.get_context("spawn")
        self.workers: list[Worker] = []
        self.generation, self.turn = 0, 0
        self.quick_deaths, self.gave_up = 0, None  # gave_up: the exit code that ended it

    def start(self) -> None:
        self.workers = [self._spawn(i) for i in range(self.count)]

    def _spawn(self, index: int) -> Worker:
        self.generation += 1
        path = self.folder / f"w{index}-{self.generation}.sock"
        proc = self.ctx.Process(target=self.target, name=f"vggnet-serve-{index}",
                                args=self.args + (str(path), str(self.metrics_folder)))
        proc.start()
        return Worker(index, proc, path)

    def pick(self, exclude=()) -> Worker | None:
        """The ready worker with the fewest requests in flight, other than those in
        ``exclude`` (tried already); ties take turns."""
        ready = [w for w in self.workers if w.ready and w not in exclude]
        if not ready:
            return None
        self.turn += 1
        return min(ready, key=lambda w: (w.inflight, (w.index - self.turn) % self.count))

    def reap(self) -> None:
        """Replace each worker that has exited (unless too many die as they start)."""
        for i, w in enumerate(self.workers):
            if w.proc.exitcode is None or self.gave_up is not None:
                continue
            w.path.unlink(missing_ok=True)
            w.upstream.close()
            quick = time.monotonic() - w.started_at < QUICK_DEATH_S
            self.quick_deaths = self.quick_deaths + 1 if quick else 0
            if self.quick_deaths >= QUICK_DEATHS:
                log.error("vggnet serve: workers keep dying as they start (the last exited "
                          "with %s); stopping", w.proc.exitcode)
                self.gave_up = w.proc.exitcode
                return
            log.warning("vggnet serve: worker %d (pid %d) exited with %s; starting another",
                        i, w.proc.pid, w.proc.exitcode)
            self.metrics.restarts.inc()
            self.workers[i] = self._spawn(i)

    def signal(self, sig: int) -> None:
        for w in self.workers:
            if w.proc.exitcode is None:
                os.kill(w.proc.pid, sig)

    async def stop(self, timeout: float) -> None:
        """SIGTERM to every worker (nothing is in flight by now), SIGKILL after ``timeout``."""
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(w.proc.exitcode is None for w in self.workers):
            if time.monotonic() > deadline:
                self.signal(signal.SIGKILL)
                break
            await asyncio.sleep(0.05)
        for w in self.workers:
            w.upstream.close()

    def kill(self) -> None:
        """The last word, whatever happened before: no worker left running, no folder left."""
        self.signal(signal.SIGKILL)
        for w in self.workers:
            w.proc.join(10)
        shutil.rmtree(self.folder, ignore_errors=True)


def _remove_folders_of_dead_supervisors() -> None:
    """A supervisor killed with SIGKILL cannot remove its folder (sockets, metrics files): the
    next one removes such leftovers, its user's folders whose supervisor pid is gone."""
    for folder in Path(tempfile.gettempdir()).glob("vggnet-serve-*-*"):
        pid = folder.name.split("-")[2]
        try:
            if not pid.isdigit() or folder.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)  # raises if there is no such process
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # alive under another user, or the folder just went
            continue


def _messages(status: int, body: bytes, content_type: bytes,
              extra_headers: tuple = ()) -> tuple[dict, dict]:
    """The two ASGI messages of a whole response the front answers itself."""
    headers = [(b"content-type", content_type),
               (b"content-length", str(len(body)).encode()), *extra_headers]
    return ({"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body})


class Proxy:
    """The ASGI app of the front: ``/healthz`` (every worker's state) and ``/metrics`` (the
    workers' counters summed, then the front's own) answered here, every other request
    forwarded. ``state`` has what :class:`DrainingServer` reads."""

    def __init__(self, settings: ServeSettings, pool: WorkerPool, on_give_up):
        self.pool, self.on_give_up = pool, on_give_up
        self.state = SimpleNamespace(service=ServiceState(), settings=settings)

    @property
    def service(self) -> ServiceState:
        return self.state.service

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return
        if scope["path"] == "/healthz":
            return await self._reply(send, *self._health())
        if scope["path"] == "/metrics":
            return await self._metrics(send)
        if self.service.draining:
            self.pool.metrics.error("draining")
            return await self._reply(send, 503, {
                "detail": "the service is shutting down; retry on another instance"})
        self.service.inflight += 1
        try:
            await self._forward(scope, receive, send)
        finally:
            self.service.inflight -= 1

    @staticmethod
    async def _reply(send, status: int, detail: dict, extra_headers: tuple = ()) -> None:
        for message in _messages(status, json.dumps(detail).encode(), b"application/json",
                                 extra_headers):
            await send(message)

    async def _metrics(self, send) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST

        body = self.pool.metrics.render(str(self.pool.metrics_folder)).encode()
        for message in _messages(200, body, CONTENT_TYPE_LATEST.encode()):
            await send(message)

    def _health(self) -> tuple[int, dict]:
        workers = [w.describe() for w in self.pool.workers]
        ok = not self.service.draining and any(w["ready"] for w in workers)
        status = "draining" if self.service.draining else "ok" if ok else "starting"
        return (200 if ok else 503), {"status": status, "inflight": self.service.inflight,
                                      "workers": workers}

    async def _lifespan(self, receive, send) -> None:
        monitor = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.pool.start()
                monitor = asyncio.get_running_loop().create_task(self._monitor())
                while not any(w.ready for w in self.pool.workers) and \
                        self.pool.gave_up is None:
                    await asyncio.sleep(0.05)
                if self.pool.gave_up is not None:
                    await send({"type": "lifespan.startup.failed", "message": "no worker "
                                "started"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if monitor is not None:
                    monitor.cancel()
                await self.pool.stop(self.state.settings.drain_timeout_s + 30)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _monitor(self) -> None:
        while self.pool.gave_up is None:
            try:
                self.pool.reap()
            except Exception:  # noqa: BLE001 - the monitor must outlive any one failure
                log.exception("vggnet serve: replacing a dead worker failed; trying again")
            await asyncio.sleep(0.1)
        self.on_give_up(self.pool.gave_up)

    async def _forward(self, scope, receive, send) -> None:
        async def body():
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone()
                yield message.get("body", b"")
                if not message.get("more_body", False):
                    return

        headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP]
        length = dict(headers).get(b"content-length", b"")
        limit = self.state.settings.max_upload_bytes
        if length.isdigit() and int(length) > limit:  # refused here, not streamed on
            self.pool.metrics.error("upload_too_large")
            return await self._reply(send, 413, {"detail": _too_large(int(length), limit)})
        target = scope["raw_path"].decode("latin-1") if scope.get("raw_path") else scope["path"]
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        tried = set()
        while True:
            worker = self.pool.pick(exclude=tried)
            if worker is None:
                self.pool.metrics.error("no_worker_ready")
                return await self._reply(send, 503, {
                    "detail": "no worker is ready to answer (they are starting or being "
                              "replaced); retry in a few seconds"}, ((b"retry-after", b"5"),))
            tried.add(worker)
            worker.inflight += 1
            try:
                return await worker.upstream.request(scope["method"], target, headers,
                                                     body(), send)
            except ConnectFailed:  # raised before the body is read: nothing was sent
                continue  # that worker is gone: try another one
            except UpstreamError as exc:
                return await self._worker_failed(send, worker, exc)
            except ClientGone:
                return  # the client went away mid-upload; nobody is left to answer
            finally:
                worker.inflight -= 1

    async def _worker_failed(self, send, worker: Worker, exc: Exception) -> None:
        log.warning("vggnet serve: worker %d (pid %d) failed a request: %s", worker.index,
                    worker.proc.pid, exc)
        self.pool.metrics.error("worker_failed")
        await self._reply(send, 502, {
            "detail": f"the worker process answering this request (pid {worker.proc.pid}) "
                      "stopped before it finished; it is being replaced and the other workers "
                      "go on serving. The request was not completed: send it again"})
