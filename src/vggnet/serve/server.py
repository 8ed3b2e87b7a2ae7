"""Running the service under uvicorn, with a graceful shutdown.

On SIGTERM (or a first Ctrl-C) the server drains: it keeps listening, answers every new request
with 503, lets the requests in flight finish (up to ``drain_timeout_s``), then shuts down and
exits with status 0. A second signal stops it at once. With ``workers > 1`` a small supervisor
binds the socket once, starts that many worker processes (each with its own model, batcher and
metrics), replaces a worker that dies, and passes SIGTERM on to them.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time

from ..errors import VggnetError
from .app import ServeSettings, create_app

log = logging.getLogger(__name__)


def _uvicorn_server_class():
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def __init__(self, config, app):
            super().__init__(config)
            self.service = app.state.service
            self.drain_timeout = app.state.settings.drain_timeout_s
            self.drain_deadline: float | None = None

        def handle_exit(self, sig, frame):
            if self.drain_deadline is None:  # first signal: drain
                self.service.draining = True
                self.drain_deadline = time.monotonic() + self.drain_timeout
                log.info("vggnet serve: draining (%d request(s) in flight); new requests get "
                         "503", self.service.inflight)
            else:  # second signal: stop now
                self.should_exit = self.force_exit = True

        async def on_tick(self, counter: int) -> bool:
            if self.drain_deadline is not None and (
                    self.service.inflight == 0 or time.monotonic() > self.drain_deadline):
                self.should_exit = True
            return await super().on_tick(counter)

    return DrainingServer


def _config(app, settings: ServeSettings, host: str, port: int, log_level: str,
            access_log: bool, own_logging: bool = True):
    """uvicorn's settings. ``own_logging``: the process is the service's (``vggnet serve``),
    so uvicorn may install its logging configuration; in someone else's process (a
    :class:`BackgroundServer` in a notebook or a test) it must not, since that configuration
    first closes every logging handler of the process."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    return uvicorn.Config(app, host=host, port=port, log_level=log_level,
                          access_log=access_log, timeout_graceful_shutdown=5,
                          lifespan="on", log_config=LOGGING_CONFIG if own_logging else None)


def serve(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000, *,
          workers: int = 1, log_level: str = "info", access_log: bool = True,
          sock: socket.socket | None = None) -> None:
    """Serve until SIGTERM / Ctrl-C. ``sock``: an already bound socket (tests bind port 0)."""
    if workers > 1:
        return _supervise(settings, host, port, workers, log_level, access_log)
    app = create_app(settings)
    server = _uvicorn_server_class()(_config(app, settings, host, port, log_level,
                                             access_log), app)
    server.run(sockets=[sock] if sock is not None else None)


def _worker(supervisor: int, settings_json: str, sock: socket.socket, log_level: str,
            access_log: bool, threads: int) -> None:
    _die_with_parent(supervisor)
    import torch

    torch.set_num_threads(threads)
    settings = ServeSettings(**json.loads(settings_json))
    app = create_app(settings)
    server = _uvicorn_server_class()(_config(app, settings, "", 0, log_level, access_log), app)
    server.run(sockets=[sock])


def _die_with_parent(supervisor: int) -> None:
    """Linux: this worker gets SIGTERM when its supervisor (pid ``supervisor``) dies, even by
    SIGKILL, so no worker is left holding the port. If the supervisor died while the worker was
    still starting (before prctl), the worker has already been handed to init or to a
    subreaper (systemd, tini), so it ends itself now."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:
        os.kill(os.getpid(), signal.SIGTERM)


# a worker that dies within this many seconds of its start counts as failing to start; after
# this many such deaths in a row the supervisor gives up instead of restarting forever
_QUICK_DEATH_S, _QUICK_DEATHS = 30.0, 3


def _supervise(settings: ServeSettings, host: str, port: int, workers: int, log_level: str,
               access_log: bool) -> None:
    """Bind once, keep ``workers`` processes serving on the socket: a worker that dies (killed,
    out of memory) is replaced; SIGTERM / Ctrl-C is passed on to all of them, which drain."""
    from multiprocessing.connection import wait

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    threads = settings.threads or max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")
    args = (os.getpid(), json.dumps(settings.to_dict()), sock, log_level, access_log, threads)

    def start(i: int):
        proc = ctx.Process(target=_worker, name=f"vggnet-serve-{i}", args=args)
        proc.start()
        proc.started_at = time.monotonic()
        return proc

    procs = [start(i) for i in range(workers)]
    log.info("vggnet serve: %d workers on http://%s:%d (%d inference thread%s each)", workers,
             host, sock.getsockname()[1], threads, "s" if threads > 1 else "")
    stopping = []

    def forward(sig, frame):
        stopping.append(sig)
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, sig)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    quick_deaths, gave_up = 0, []
    try:
        while not (stopping and all(p.exitcode is not None for p in procs)):
            wait([p.sentinel for p in procs if p.exitcode is None], timeout=1.0)
            for i, p in enumerate(procs):
                if p.exitcode is None or stopping:
                    continue
                quick = time.monotonic() - p.started_at < _QUICK_DEATH_S
                quick_deaths = quick_deaths + 1 if quick else 0
                if quick_deaths >= _QUICK_DEATHS:
                    log.error("vggnet serve: workers keep dying as they start (the last "
                              "exited with %s); stopping", p.exitcode)
                    forward(signal.SIGTERM, None)
                    gave_up.append(p.exitcode)
                    break
                log.warning("vggnet serve: worker %d (pid %d) exited with %s; starting "
                            "another", i, p.pid, p.exitcode)
                procs[i] = start(i)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        sock.close()
    if gave_up:
        raise VggnetError(f"the serve workers kept dying as they started (the last exited with "
                          f"{gave_up[0]}); the log above says why")


class BackgroundServer:
    """The service on a background thread of this process, for notebooks, tests and load
    tests: ``with BackgroundServer(settings) as server: requests.get(server.url + "/healthz")``.
    Port 0 (the default) takes a free port; ``url`` says which."""

    def __init__(self, settings: ServeSettings, host: str = "127.0.0.1", port: int = 0, *,
                 log_level: str = "warning", access_log: bool = False):
        self.app = create_app(settings)
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        self.server = _uvicorn_server_class()(
            _config(self.app, settings, host, port, log_level, access_log, own_logging=False),
            self.app)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="vggnet-serve", daemon=True)

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the service did not start (see the log above)")
            time.sleep(0.02)
        return self

    def drain(self) -> None:
        """What SIGTERM does: 503 to new requests, then stop once none is in flight."""
        self.server.handle_exit(signal.SIGTERM, None)

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
