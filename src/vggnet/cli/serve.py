"""`vggnet serve`: a run behind HTTP (JSON API, Prometheus metrics and a page to try it)."""

from __future__ import annotations

from ..errors import UsageError
from .predict import add_backend_arguments


NAME = "serve"
# shown at the end of `vggnet serve --help`
EXAMPLES = (
    "vggnet serve runs/photos",
    "vggnet serve runs/photos --host 0.0.0.0 --port 8080",
    "curl -F file=@IMG_0001.jpg http://127.0.0.1:8000/v1/predict",
)


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve a trained run over HTTP, with a page to try it")
    p.add_argument("checkpoint", help="a run directory or a .safetensors checkpoint")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1, this machine only; 0.0.0.0 "
                        "exposes the service to the network)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    add_backend_arguments(p)
    p.add_argument("--max-batch", type=int, default=32,
                   help="most images per forward pass (default 32; 1 turns batching off)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a first image waits for others to join its batch (default 5)")
    p.add_argument("--max-queue", type=int, default=128,
                   help="most images waiting for a batch; a request beyond it is refused at "
                        "once with 503 and Retry-After instead of waiting for seconds "
                        "(default 128; 0: no bound)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes, each with its own model, behind one front that "
                        "replaces a worker that dies (default 1)")
    p.add_argument("--max-upload-mb", type=float, default=20.0,
                   help="largest request body, refused with 413 beyond it (default 20)")
    p.add_argument("--max-images", type=int, default=16,
                   help="most images in one request (default 16)")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="on SIGTERM, seconds that requests in flight may take (default 30)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"],
                   help="the least severe messages the service logs (default info: startup, "
                        "every request unless --no-access-log, errors)")
    p.add_argument("--no-access-log", action="store_true", help="do not log every request")
    p.set_defaults(func=run)


def run(args) -> None:
    _need_serve_extra()
    for flag, value, low in (("--max-batch", args.max_batch, 1), ("--workers", args.workers, 1),
                             ("--max-images", args.max_images, 1)):
        if value < low:
            raise UsageError(f"{flag} must be at least {low}, not {value}")
    for flag, value in (("--max-wait-ms", args.max_wait_ms), ("--drain-timeout",
                                                               args.drain_timeout)):
        if value < 0:
            raise UsageError(f"{flag} must be >= 0, not {value}")
    if args.max_queue < 0:
        raise UsageError(f"--max-queue must be 0 (no bound) or more, not {args.max_queue}")
    if args.max_upload_mb <= 0:
        raise UsageError(f"--max-upload-mb must be > 0, not {args.max_upload_mb}")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, not {args.port}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, not {args.threads}")
    from ..run import resolve_checkpoint
    from ..serve import ServeSettings, serve

    resolve_checkpoint(args.checkpoint)  # a missing run is one line, before anything starts
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    settings = ServeSettings(run=args.checkpoint, backend=args.backend,
                             precision=args.precision, device=args.device,
                             max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                             max_queue=args.max_queue,
                             max_upload_mb=args.max_upload_mb, max_images=args.max_images,
                             threads=args.threads, drain_timeout_s=args.drain_timeout)
    serve(settings, args.host, args.port, workers=args.workers, log_level=args.log_level,
          access_log=not args.no_access_log)


def _need_serve_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"`vggnet serve` needs the serve extra ({exc.name} is missing): "
                         "pip install 'vggnet[serve]'") from None
