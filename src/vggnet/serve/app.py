"""The HTTP service: a FastAPI app over a :class:`ServedModel` and a :class:`DynamicBatcher`.

Endpoints: ``POST /v1/predict``, ``POST /v1/explain``, ``GET /v1/model``, ``GET /healthz``,
``GET /metrics`` (Prometheus text), ``GET /`` (the page) and FastAPI's own ``/docs`` and
``/openapi.json``. Every error is JSON ``{"detail": ...}`` with the status that fits, and the
service keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from ..errors import ConfigError, ImageReadError, ImageTooLargeError, NotAnImageError
from ..io import open_image
from .backend import ServedModel
from .batcher import BatchError, DynamicBatcher, Overloaded
from .metrics import ServiceMetrics

STATIC = Path(__file__).parent / "static"
RAW_TYPES = ("image/", "application/octet-stream")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeSettings:
    """Everything that shapes one service; ``vggnet serve``'s flags, one to one."""

    run: str
    backend: str = "auto"           # see vggnet.inference.backends
    precision: str = "auto"         # torch and openvino backends: auto, fp32, bf16
    device: str = "cpu"
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 128            # images waiting for a batch; beyond, 503 + Retry-After
    max_upload_mb: float = 20.0
    max_images: int = 16
    threads: int | None = None      # torch / ONNX Runtime threads for inference
    drain_timeout_s: float = 30.0   # SIGTERM: how long in-flight requests may take to finish

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def to_dict(self) -> dict:
        return asdict(self)


class ServiceState:
    """Shared by the app and its server: requests in flight, and whether it is draining."""

    def __init__(self):
        self.inflight = 0
        self.draining = False


class UploadTooLarge(Exception):
    """Raised from the request body stream once it exceeds the upload limit."""


class RequestError(Exception):
    """A bad request: its status, one-line detail and a metrics reason."""

    def __init__(self, status: int, detail: str, reason: str, errors: list | None = None):
        super().__init__(detail)
        self.status, self.detail, self.reason, self.errors = status, detail, reason, errors


def _json(status: int, detail: str, **extra):
    return JSONResponse({"detail": detail, **extra}, status_code=status)


class _Guard:
    """Pure ASGI middleware, around the routes and their error handlers: counts requests in flight, answers 503 while draining,
    refuses bodies over the upload limit (by Content-Length before reading any of it, else
    while it streams in), and records every response in the metrics."""

    def __init__(self, app, settings: ServeSettings, state: ServiceState,
                 metrics: ServiceMetrics):
        self.app, self.settings, self.state, self.metrics = app, settings, state, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = self.metrics.route_label(scope["path"])
        start, status = time.perf_counter(), [500]

        async def send_and_record(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        self.state.inflight += 1
        try:
            await self._handle(scope, receive, send_and_record)
        finally:
            self.state.inflight -= 1
            self.metrics.observe(route, scope["method"], status[0], time.perf_counter() - start)

    async def _handle(self, scope, receive, send):
        limit = self.settings.max_upload_bytes
        if self.state.draining:
            self.metrics.error("draining")
            return await _json(503, "the service is shutting down; retry on another "
                                    "instance")(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            self.metrics.error("upload_too_large")
            return await _json(413, _too_large(int(length), limit))(scope, receive, send)
        seen = 0

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise UploadTooLarge(_too_large(seen, limit, streamed=True))
            return message

        await self.app(scope, counted_receive, send)


def _too_large(size: int, limit: int, streamed: bool = False) -> str:
    what = f"more than {size:,} bytes so far" if streamed else f"{size:,} bytes"
    return (f"upload too large: {what}, the limit is {limit:,} bytes; send smaller images "
            "or fewer per request (the server's --max-upload-mb)")


class _Service:
    """What the routes share: the model, its batcher and worker threads, state and metrics."""

    def __init__(self, settings: ServeSettings, model: ServedModel):
        self.settings, self.model = settings, model
        self.state, self.metrics = ServiceState(), ServiceMetrics()
        self.infer_pool = ThreadPoolExecutor(1, thread_name_prefix="vggnet-infer")
        self.decode_pool = ThreadPoolExecutor(2, thread_name_prefix="vggnet-decode")
        self.batcher = DynamicBatcher(model.probabilities, self.infer_pool,
                                      max_batch=settings.max_batch,
                                      max_wait_ms=settings.max_wait_ms,
                                      max_queue=settings.max_queue,
                                      on_batch=self.metrics.batch)
        self.can_explain = model.info.backend == "torch"  # Grad-CAM needs the PyTorch model
        self._explainer = None

    @property
    def explainer(self):
        """Grad-CAM, built on the first /v1/explain (a prediction never goes through it)."""
        if self._explainer is None and self.can_explain:
            self._explainer = self.model.explainer()
        return self._explainer

    @asynccontextmanager
    async def lifespan(self, app):
        self.batcher.start()
        yield
        await self.batcher.stop()
        self.infer_pool.shutdown(wait=True)
        self.decode_pool.shutdown(wait=True)

    def top_k(self, uploads, probs, k: int) -> dict:
        k = min(k, len(self.model.classes))
        out = []
        for (name, _), p in zip(uploads, probs):
            values, indices = p.topk(k)
            out.append({"file": name, "top": [
                {"class": self.model.classes[i], "probability": round(float(v), 6)}
                for v, i in zip(values.tolist(), indices.tolist())]})
        info = self.model.info
        return {"model": {"architecture": info.architecture, "run": info.run,
                          "backend": info.backend, "precision": info.precision,
                          "weights_sha256": info.weights_sha256},
                "predictions": out}


def create_app(settings: ServeSettings, model: ServedModel | None = None):
    """The FastAPI app for one run; ``model`` may be passed in already loaded (tests)."""
    model = model or ServedModel(settings.run, settings.backend, settings.device,
                                 settings.threads, settings.precision)
    svc = _Service(settings, model)
    app = FastAPI(title="vggnet", version=model.info.vggnet_version, lifespan=svc.lifespan,
                  description=f"VGG image classification: {model.info.architecture} from "
                              f"{model.info.run} ({model.info.backend} backend)")
    app.state.service, app.state.model, app.state.settings = svc.state, model, settings
    app.state.metrics, app.state.batcher = svc.metrics, svc.batcher
    _error_handlers(app, svc.metrics)
    _image_routes(app, svc)
    _info_routes(app, svc)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(_Guard, settings=settings, state=svc.state, metrics=svc.metrics)
    return app


def _image_routes(app, svc: _Service) -> None:
    @app.post("/v1/predict", openapi_extra=_UPLOAD_BODY,
              summary="Classify one or several images")
    async def predict(request: Request, top_k: int = Query(5, ge=1, description="classes "
                                                           "returned per image")):
        start = time.perf_counter()
        uploads = await _read_uploads(request, svc.settings)
        tensors = await _decode_all(svc.model, uploads, svc.decode_pool)
        probs = await asyncio.gather(*(svc.batcher.submit(x) for x in tensors))
        svc.metrics.images(len(probs))
        return {**svc.top_k(uploads, probs, top_k),
                "latency_ms": round(1000 * (time.perf_counter() - start), 2)}

    @app.post("/v1/explain", openapi_extra=_UPLOAD_BODY, response_class=Response,
              summary="Grad-CAM of one image: the picture and its heatmap side by side (PNG)",
              responses={200: {"content": {"image/png": {}}}})
    async def explain(request: Request,
                      class_name: str | None = Query(None, alias="class", description="class "
                                                     "to explain (default: the top one)"),
                      method: str = Query("gradcam", pattern="^gradcam(\\+\\+)?$")):
        if not svc.can_explain:
            raise RequestError(501, "Grad-CAM needs the PyTorch model: serve with --backend "
                               "torch", "explain_unavailable")
        uploads = await _read_uploads(request, svc.settings)
        if len(uploads) != 1:
            raise RequestError(422, f"explain takes one image, not {len(uploads)}",
                               "explain_one_image")
        name, data = uploads[0]
        loop = asyncio.get_running_loop()
        try:
            image = await loop.run_in_executor(svc.decode_pool, open_image, data, None, name)
        except ImageReadError as exc:
            raise _image_error([(name, exc)]) from None
        try:
            png = await loop.run_in_executor(svc.infer_pool, svc.explainer.png, image,
                                             class_name, method)
        except ConfigError as exc:
            raise RequestError(422, str(exc), "unknown_class") from None
        return Response(png, media_type="image/png")


def _info_routes(app, svc: _Service) -> None:
    settings = svc.settings

    @app.get("/v1/model", summary="The model behind the service")
    async def model_info():
        return {**svc.model.info.to_dict(), "explain": svc.can_explain,
                "limits": {"max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms,
                           "max_queue": settings.max_queue,
                           "max_upload_mb": settings.max_upload_mb,
                           "max_images": settings.max_images}}

    @app.get("/healthz", summary="Liveness and readiness")
    async def healthz():
        if not svc.batcher.alive:  # nothing would answer: a supervisor should restart us
            return JSONResponse({"status": "failed", "detail": "the batching task has ended "
                                 f"({svc.batcher.ended}); restart the service"},
                                status_code=503)
        return {"status": "ok", "inflight": svc.state.inflight - 1}  # less this request

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def prometheus():
        return PlainTextResponse(svc.metrics.render(), media_type=svc.metrics.content_type)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")


def _error_handlers(app, metrics: ServiceMetrics) -> None:
    @app.exception_handler(RequestError)
    async def request_error(request, exc: RequestError):
        metrics.error(exc.reason)
        extra = {"errors": exc.errors} if exc.errors else {}
        return _json(exc.status, exc.detail, **extra)

    @app.exception_handler(UploadTooLarge)
    async def upload_too_large(request, exc: UploadTooLarge):
        metrics.error("upload_too_large")
        return _json(413, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        metrics.error("not_found" if exc.status_code == 404 else f"http_{exc.status_code}")
        return _json(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        metrics.error("invalid_parameters")
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors())
        return _json(422, f"invalid request: {problems}")

    @app.exception_handler(Overloaded)
    async def overloaded(request, exc: Overloaded):
        metrics.error("overloaded")
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(BatchError)
    async def batch_failed(request, exc: BatchError):
        log.error("%s on %s", exc, request.url.path)
        metrics.error("batch_failed")
        return _json(500, str(exc))

    @app.exception_handler(Exception)
    async def internal(request, exc: Exception):
        log.exception("internal error on %s", request.url.path)
        metrics.error("internal")
        return _json(500, f"internal error ({type(exc).__name__}); the server log has the "
                          "traceback")


_UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {
        "type": "array", "items": {"type": "string", "format": "binary"}}}},
        "description": "one or several image files, in fields of any name"},
    "image/*": {"schema": {"type": "string", "format": "binary"},
                "description": "one image as the raw body"},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


async def _read_uploads(request, settings: ServeSettings) -> list[tuple[str, bytes]]:
    """The uploaded files as (name, bytes): multipart fields of any name, or a raw body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    n = settings.max_images
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=n, max_fields=n + 16)
        except HTTPException as exc:
            if "Too many files" in str(exc.detail):
                raise RequestError(413, f"too many images in one request: at most {n} "
                                   "(the server's --max-images); split the request",
                                   "too_many_images") from None
            raise RequestError(400, f"malformed multipart body: {exc.detail}",
                               "bad_multipart") from None
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise RequestError(422, "no file in the form: send images as file fields of any "
                               "name (curl -F file=@cat.jpg ...)", "no_file")
        return [(f.filename or f"file{i}", await f.read()) for i, f in enumerate(files)]
    if ctype.startswith(RAW_TYPES):
        return [(request.headers.get("x-filename", "upload"), await request.body())]
    shown = ctype or "no content type"
    raise RequestError(415, f"cannot read {shown}: send images as multipart/form-data, or one "
                       "image as the raw body with an image/* or application/octet-stream "
                       "content type", "unsupported_media_type")


async def _decode_all(model: ServedModel, uploads, pool) -> list:
    loop = asyncio.get_running_loop()
    results = await asyncio.gather(*(loop.run_in_executor(pool, model.decode, data, name)
                                     for name, data in uploads), return_exceptions=True)
    errors = [(name, r) for (name, _), r in zip(uploads, results)
              if isinstance(r, ImageReadError)]
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, ImageReadError):
            raise r
    if not errors:
        return results
    raise _image_error(errors)


def _image_error(errors: list) -> RequestError:
    """One request error for the files that could not be read, with the fitting status."""
    listed = [{"file": name, "error": str(e)} for name, e in errors]
    if any(isinstance(e, ImageTooLargeError) for _, e in errors):
        status, reason = 413, "image_too_large"
    elif all(isinstance(e, NotAnImageError) for _, e in errors):
        status, reason = 415, "not_an_image"
    else:
        status, reason = 422, "unreadable_image"
    first = str(errors[0][1])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return RequestError(status, first + more, reason, listed)
