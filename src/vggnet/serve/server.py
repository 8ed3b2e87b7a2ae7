"""Running the service under uvicorn, with a graceful shutdown.

On SIGTERM (or a first Ctrl-C) the server drains: it keeps listening, answers every new request
with 503, lets the requests in flight finish (up to ``drain_timeout_s``), then shuts down and
exits with status 0. A second signal stops it at once. With ``workers > 1`` the process that
owns the port forwards requests to that many worker processes (each with its own model, batcher
and metrics), replaces a worker that dies and drains before stopping them: see
:mod:`vggnet.serve.proxy`.
"""

from __future__ import annotations

import json
import logging
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


def _worker(supervisor: int, settings_json: str, log_level: str, access_log: bool,
            threads: int, path: str, metrics_folder: str) -> None:
    """One worker of ``--workers N``: the whole service on the Unix socket ``path``, which
    appears once the model is loaded, counting its metrics in files under ``metrics_folder``
    for the front to sum. In its own process group, so that a Ctrl-C in the terminal reaches
    the supervisor only, which drains first and then stops the workers."""
    os.setpgrp()
    _die_with_parent(supervisor)
    import torch

    from ..device import reuse_freed_memory

    reuse_freed_memory()  # a process of vggnet's own, as the command's (vggnet.cli.main)

    from .metrics import count_in_folder

    count_in_folder(metrics_folder)

    torch.set_num_threads(threads)
    settings = ServeSettings(**json.loads(settings_json))
    app = create_app(settings)
    config = _config(app, settings, "", 0, log_level, access_log)
    config.uds = path
    # only the front connects, and it keeps idle connections for reuse: never close them
    # under it (a close racing a reuse would fail a request)
    config.timeout_keep_alive = 24 * 3600
    _uvicorn_server_class()(config, app).run()


def _die_with_parent(supervisor: int) -> None:
    """Linux: this worker gets SIGTERM when its supervisor (pid ``supervisor``) dies, even by
    SIGKILL, so no worker is left behind. If the supervisor died while the worker was
    still starting (before prctl), the worker has already been handed to init or to a
    subreaper (systemd, tini), so it ends itself now."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:
        os.kill(os.getpid(), signal.SIGTERM)


def _supervise(settings: ServeSettings, host: str, port: int, workers: int, log_level: str,
               access_log: bool) -> None:
    """The port is this process's: it forwards each request to one of ``workers`` processes
    (see :mod:`vggnet.serve.proxy`), replaces a worker that dies, and drains on SIGTERM."""
    from .proxy import Proxy, WorkerPool

    threads = settings.threads or max(1, (os.cpu_count() or 1) // workers)
    pool = WorkerPool(_worker, (os.getpid(), json.dumps(settings.to_dict()), log_level,
                                access_log, threads), workers)
    gave_up = []

    def give_up(exitcode):
        gave_up.append(exitcode)
        server.should_exit = True

    proxy = Proxy(settings, pool, give_up)
    config = _config(proxy, settings, host, port, log_level, access_log)
    server = _uvicorn_server_class()(config, proxy)
    log.info("vggnet serve: %d workers behind http://%s:%d (%d inference thread%s each)",
             workers, host, port, threads, "s" if threads > 1 else "")
    try:
        server.run()
    except SystemExit:  # uvicorn's way of saying that the app did not start
        if pool.gave_up is None:
            raise
    finally:
        pool.kill()  # after a forced exit or a failed start: leave no worker, no socket
    if gave_up or pool.gave_up is not None:
        code = gave_up[0] if gave_up else pool.gave_up
        raise VggnetError(f"the serve workers kept dying as they started (the last exited with "
                          f"{code}); the log above says why")


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
