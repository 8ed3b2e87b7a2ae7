"""`vggnet serve` in process: answers equal `vggnet predict`'s, every kind of bad input gets a
JSON error with the right status while the service keeps serving, dynamic batching groups
waiting images, metrics count what happened, and the ONNX and int8 backends answer alike.
The live server and the real command (concurrency, draining, workers): test_serve_live.py."""

import hashlib
import struct
import zlib

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from fastapi.testclient import TestClient  # noqa: E402

from vggnet.cli import main  # noqa: E402
from vggnet.predict import Predictor  # noqa: E402
from vggnet.serve import ServeSettings, create_app  # noqa: E402

from helpers import prometheus_value, serve_images, train_tiny_run  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("serve") / "run"
    train_tiny_run(out)
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return serve_images(tmp_path_factory.mktemp("serve_images"))


@pytest.fixture(scope="module")
def client(run):
    # fp32 pinned: its answers are compared with `vggnet predict`'s to 1e-5 on every CPU
    with TestClient(create_app(ServeSettings(run=str(run), backend="torch", precision="fp32",
                                             max_images=4, max_upload_mb=1))) as c:
        yield c


def _files(paths):
    return [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]


def test_predictions_equal_vggnet_predicts(client, run, images):
    expected = Predictor(run, precision="fp32").predict(images, top_k=3)
    r = client.post("/v1/predict?top_k=3", files=_files(images))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [p["file"] for p in body["predictions"]] == [p.name for p in images]
    for got, want in zip(body["predictions"], expected):
        assert [t["class"] for t in got["top"]] == [c for c, _ in want.top]
        np.testing.assert_allclose([t["probability"] for t in got["top"]],
                                   [p for _, p in want.top], atol=1e-5)
    assert body["model"]["architecture"] == "vgg11_bn" and body["latency_ms"] > 0
    # one image as the raw body gives the same answer
    raw = client.post("/v1/predict?top_k=3", content=images[1].read_bytes(),
                      headers={"content-type": "image/jpeg", "x-filename": "b.jpg"})
    assert raw.status_code == 200
    assert raw.json()["predictions"][0]["top"] == body["predictions"][1]["top"]
    assert raw.json()["predictions"][0]["file"] == "b.jpg"


def test_model_endpoint_names_the_weights(client, run):
    m = client.get("/v1/model").json()
    assert m["weights_sha256"] == hashlib.sha256((run / "best.safetensors").read_bytes()).hexdigest()
    assert m["classes"] == [str(i) for i in range(10)]
    assert m["preprocessing"]["input_size"] > 0 and len(m["preprocessing"]["mean"]) == 3
    assert m["backend"] == "torch" and m["precision"] == "fp32" and m["limits"]["max_images"] == 4
    assert client.get("/healthz").json()["status"] == "ok"


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares a size and holds no pixels (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _chunks(total: int, size: int = 64 * 1024):
    sent = 0
    while sent < total:
        yield b"\0" * min(size, total - sent)
        sent += size


BAD = {
    "text instead of an image": (dict(files=[("f", ("notes.jpg", b"hello", "image/jpeg"))]),
                                 415, "not an image"),
    "truncated JPEG": ("truncated", 422, "corrupt or truncated"),
    "zero-byte file": (dict(files=[("f", ("empty.png", b"", "image/png"))]), 422,
                       "empty file (0 bytes)"),
    "decompression bomb": (dict(files=[("f", ("bomb.png", _png_header(20000, 20000),
                                               "image/png"))]), 413, "too many pixels"),
    "upload over the limit": (dict(content=b"\0" * (1024 * 1024 + 1),
                                   headers={"content-type": "image/png"}), 413,
                              "upload too large"),
    "upload over the limit, chunked": (dict(content=_chunks(3 * 1024 * 1024),
                                            headers={"content-type": "image/png"}), 413,
                                       "upload too large"),
    "too many images": ("five", 413, "too many images in one request: at most 4"),
    "wrong content type": (dict(content=b"{}", headers={"content-type": "application/json"}),
                           415, "cannot read application/json"),
    "no content type": (dict(content=b"\0\0"), 415, "no content type"),
    "multipart without a file": (dict(files={"name": (None, "x")}), 422, "no file in the form"),
    "url-encoded form": (dict(data={"name": "x"}), 415,
                         "cannot read application/x-www-form-urlencoded"),
    "bad top_k": (dict(params={"top_k": 0}, files=[("f", ("a.png", b"x", "image/png"))]), 422,
                  "top_k"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_a_json_error_and_the_service_goes_on(client, images, case):
    kwargs, status, fragment = BAD[case]
    if kwargs == "truncated":
        kwargs = dict(files=[("f", ("cut.jpg", images[1].read_bytes()[:300], "image/jpeg"))])
    elif kwargs == "five":
        kwargs = dict(files=_files(images[:1] * 5))
    r = client.post("/v1/predict", **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    detail = r.json()["detail"]
    assert fragment in detail and "\n" not in detail and "Traceback" not in detail
    ok = client.post("/v1/predict", files=_files(images[:1]))
    assert ok.status_code == 200


def test_one_bad_file_among_good_ones_is_named(client, images):
    files = _files(images[:2]) + [("file", ("broken.jpg", b"\xff\xd8junk", "image/jpeg"))]
    r = client.post("/v1/predict", files=files)
    assert r.status_code in (415, 422)
    assert [e["file"] for e in r.json()["errors"]] == ["broken.jpg"]


def test_routes_and_methods_that_do_not_exist(client):
    r = client.get("/v2/predict")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    r = client.get("/v1/predict")
    assert r.status_code == 405 and "detail" in r.json()



def test_explain_returns_the_grad_cam_sheet_as_png(client, images):
    from io import BytesIO

    from PIL import Image

    r = client.post("/v1/explain?class=3", files=_files(images[:1]))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    with Image.open(BytesIO(r.content)) as im:
        assert im.format == "PNG" and im.width == 2 * im.height + 8  # picture | heatmap
    pp = client.post("/v1/explain?method=gradcam%2B%2B", content=images[1].read_bytes(),
                     headers={"content-type": "image/jpeg"})
    assert pp.status_code == 200 and pp.content[:4] == b"\x89PNG"
    bad = client.post("/v1/explain?class=33", files=_files(images[:1]))
    assert bad.status_code == 422 and "closest" in bad.json()["detail"]
    two = client.post("/v1/explain", files=_files(images[:2]))
    assert two.status_code == 422 and "one image" in two.json()["detail"]
    junk = client.post("/v1/explain", content=b"junk", headers={"content-type": "image/png"})
    assert junk.status_code == 415
    assert client.get("/v1/model").json()["explain"] is True


def test_page_openapi_and_static_assets_are_served_by_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: works offline
    for asset in ("app.js", "style.css"):
        r = client.get(f"/static/{asset}")
        assert r.status_code == 200 and "https://" not in r.text
    schema = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/model", "/healthz", "/metrics"} <= set(schema["paths"])
    body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/*"} <= set(body)


def test_metrics_count_requests_errors_and_batches(run, images):
    with TestClient(create_app(ServeSettings(run=str(run)))) as c:
        for _ in range(3):
            assert c.post("/v1/predict", files=_files(images)).status_code == 200
        assert c.post("/v1/predict", content=b"x", headers={"content-type": "text/plain"}
                      ).status_code == 415
        c.get("/no/such/page")
        text = c.get("/metrics").text
    assert prometheus_value(text, "vggnet_requests_total", route="/v1/predict", status="200") == 3
    assert prometheus_value(text, "vggnet_requests_total", route="/v1/predict", status="415") == 1
    assert prometheus_value(text, "vggnet_requests_total", route="other", status="404") == 1
    assert prometheus_value(text, "vggnet_errors_total", reason="unsupported_media_type") == 1
    assert prometheus_value(text, "vggnet_images_total") == 9
    assert prometheus_value(text, "vggnet_batch_size_sum") == 9
    assert prometheus_value(text, "vggnet_request_latency_seconds_count", route="/v1/predict") == 4


def test_a_service_whose_batcher_ends_says_so_on_healthz_and_answers_500(run, images):
    """If the batching task ever ends (what the batcher then does: test_batcher.py), /healthz
    answers 503 and a prediction a 500 naming why, instead of waiting for ever."""
    with TestClient(create_app(ServeSettings(run=str(run), backend="torch"))) as c:
        assert c.get("/healthz").status_code == 200
        batcher = c.app.state.batcher
        c.portal.call(lambda: batcher._task.cancel())  # on the service's own event loop
        health = c.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "failed"
        r = c.post("/v1/predict", files=[("file", (images[0].name, images[0].read_bytes(),
                                                   "image/png"))])
        assert r.status_code == 500 and "has ended" in r.json()["detail"]


def test_onnx_and_int8_backends(run, images, tmp_path):
    pytest.importorskip("onnxruntime")
    torch_probs = Predictor(run, precision="fp32").predict(images, top_k=10)
    with TestClient(create_app(ServeSettings(run=str(run), backend="onnx"))) as c:
        body = c.post("/v1/predict?top_k=10", files=_files(images)).json()
        assert c.get("/v1/model").json()["weights_file"] == "best.onnx"
        assert c.get("/v1/model").json()["explain"] is False
        r = c.post("/v1/explain", files=_files(images[:1]))  # Grad-CAM needs PyTorch
        assert r.status_code == 501 and "--backend torch" in r.json()["detail"]
    for got, want in zip(body["predictions"], torch_probs):
        assert got["top"][0]["class"] == want.top[0][0]
        np.testing.assert_allclose(sorted(t["probability"] for t in got["top"]),
                                   sorted(p for _, p in want.top), atol=1e-4)
    assert main(["serve", str(run), "--backend", "int8"]) == 2  # no int8 model yet: one line
    assert main(["export", str(run), "--int8", "--calibration", "64",
                 "--check-images", "64"]) == 0
    with TestClient(create_app(ServeSettings(run=str(run), backend="int8"))) as c:
        r = c.post("/v1/predict", files=_files(images))
        assert r.status_code == 200 and len(r.json()["predictions"]) == 3
        info = c.get("/v1/model").json()
        assert info["weights_file"] == "best.int8.onnx" and info["precision"] == "int8"


def test_command_line_errors_are_one_line(run, tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nothing")]) == 2
    assert main(["serve", str(run), "--max-batch", "0"]) == 2
    assert main(["serve", str(run), "--max-upload-mb", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("vggnet serve: error:") for line in err)
    assert "--max-batch must be at least 1" in err[1]


def test_overload_is_refused_at_once_with_retry_after(run, images, monkeypatch):
    """An overloaded batcher's refusal (test_batcher.py: refused at once when max_queue images
    wait) is a 503 with Retry-After over HTTP, and counted."""
    from vggnet.serve import Overloaded

    with TestClient(create_app(ServeSettings(run=str(run), backend="torch"))) as c:
        async def refuse(x):
            raise Overloaded("3 images are already waiting")

        monkeypatch.setattr(c.app.state.batcher, "submit", refuse)
        r = c.post("/v1/predict", files=[("file", (images[0].name, images[0].read_bytes(),
                                                   "image/png"))])
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "already waiting" in r.json()["detail"]
        assert prometheus_value(c.get("/metrics").text, "vggnet_errors_total",
                                reason="overloaded") == 1
