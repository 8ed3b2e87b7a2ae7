"""Fuzzing with Hypothesis: every input a user can hand vggnet gets a clear error (a
:class:`~vggnet.errors.VggnetError` in Python, one line on the command line, JSON 4xx over
HTTP), never a traceback, a hang or a crash.

The default run is bounded (a few dozen examples each, a deadline per example); the long
campaign is marked slow (``make test-slow``) and runs many more of the same properties."""

import io
import struct
import zlib

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from vggnet.errors import ConfigError, ImageReadError, VggnetError
from vggnet.io import open_image


QUICK = settings(max_examples=40, deadline=2000, derandomize=True,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])
LONG = settings(max_examples=2000, deadline=5000,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def _real_files(tmp_path_factory=None) -> dict[str, bytes]:
    """A real photo-like image as PNG and as JPEG, and a palette PNG with transparency."""
    out = {}
    rgb = Image.fromarray(__import__("numpy").random.default_rng(0).integers(
        0, 255, (24, 32, 3), dtype="uint8"), "RGB")
    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        rgb.save(buf, fmt)
        out[fmt] = buf.getvalue()
    buf = io.BytesIO()
    rgb.convert("P", palette=Image.ADAPTIVE).save(buf, "PNG", transparency=0)
    out["P"] = buf.getvalue()
    return out


REAL = _real_files()


def _decodes_or_says_why(data: bytes) -> None:
    try:
        image = open_image(data, name="upload")
    except ImageReadError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert image.mode == "RGB" and image.size[0] > 0 and image.size[1] > 0


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares a size and holds no pixels (a decompression bomb's header): IHDR,
    an empty IDAT and IEND, which Pillow opens (with IHDR alone it cannot tell the format,
    and the size check is never reached)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


mutations = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8)


def _mutate(data: bytes, cut: int, changes) -> bytes:
    raw = bytearray(data[:max(0, cut)])
    for pos, value in changes:
        if raw:
            raw[pos % len(raw)] = value
    return bytes(raw)


@QUICK
@given(st.binary(max_size=2048))
def test_random_bytes_are_an_image_or_one_clear_error(data):
    _decodes_or_says_why(data)


@QUICK
@given(st.sampled_from(sorted(REAL)), st.integers(0, 4000), mutations)
def test_truncated_and_mutated_real_files_are_an_image_or_one_clear_error(kind, cut, changes):
    _decodes_or_says_why(_mutate(REAL[kind], cut, changes))


@QUICK
@given(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1))
@example(9459, 9460)  # just over Pillow's limit, under twice it: Pillow alone only warns
def test_huge_declared_dimensions_are_refused_from_the_header(width, height):
    """Above the pixel limit the header alone is refused, as too large (not as some read
    error of the missing pixels, which is what a decode without the guard would meet); at or
    under it the file is an image or a clear error."""
    from PIL import Image

    from vggnet.errors import ImageTooLargeError

    if width * height > Image.MAX_IMAGE_PIXELS:
        with pytest.raises(ImageTooLargeError, match="too many pixels"):
            open_image(_png_header(width, height), name="bomb.png")
    else:
        _decodes_or_says_why(_png_header(width, height))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from helpers import train_tiny_run
    from vggnet.serve import ServeSettings, create_app

    run = train_tiny_run(tmp_path_factory.mktemp("fuzz") / "run")
    with TestClient(create_app(ServeSettings(run=str(run), backend="torch",
                                             max_upload_mb=1))) as c:
        yield c


def _upload_answers_in_json(client, data: bytes, content_type: str) -> None:
    r = client.post("/v1/predict", content=data, headers={"content-type": content_type})
    assert r.status_code == 200 or 400 <= r.status_code < 500, r.text
    body = r.json()
    assert ("predictions" in body) if r.status_code == 200 else body["detail"]


@QUICK
@given(st.one_of(st.binary(max_size=4096),
                 st.builds(_mutate, st.sampled_from(list(REAL.values())),
                           st.integers(0, 4000), mutations)),
       st.sampled_from(["image/png", "image/jpeg", "application/octet-stream",
                        "multipart/form-data; boundary=x", "text/plain", ""]))
def test_uploads_of_anything_get_json_and_a_4xx_never_a_500(client, data, content_type):
    _upload_answers_in_json(client, data, content_type)


# --- the recipe and flag parser --------------------------------------------------------------

def _fields():
    from dataclasses import fields

    from vggnet.training.config import TrainConfig

    return [f.name for f in fields(TrainConfig)]


values = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                   st.lists(st.integers(-5, 5), max_size=3),
                   st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
keys = st.one_of(st.sampled_from(_fields()), st.text(min_size=1, max_size=12))


@QUICK
@given(st.dictionaries(keys, values, max_size=4))
def test_recipes_of_random_keys_and_types_resolve_or_name_the_problem(recipe):
    from vggnet.training.config import resolve

    try:
        resolve(None, recipe)
    except VggnetError as exc:  # a bad key or value, or a data set that is not there
        assert str(exc) and "\n" not in str(exc).strip()


@QUICK
@given(st.binary(max_size=300))
def test_recipe_files_of_random_bytes_are_refused_as_recipes(tmp_path_factory, data):
    from vggnet.training.config import resolve

    path = tmp_path_factory.mktemp("toml") / "recipe.toml"
    path.write_bytes(data)
    try:
        resolve(path)
    except ConfigError as exc:
        assert str(path) in str(exc) or "recipe" in str(exc) or "key" in str(exc)


def test_the_command_line_says_one_line_for_a_broken_recipe(tmp_path, capsys):
    from vggnet.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe lr = = 3")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not valid TOML" in err[0]


# --- the long campaign -----------------------------------------------------------------------

@pytest.mark.slow(reason="a long campaign (thousands of examples); the default suite runs "
                         "the same properties on 40 examples each")
@LONG
@given(st.sampled_from(sorted(REAL)), st.integers(0, 4000), mutations)
def test_long_campaign_on_real_files(kind, cut, changes):
    _decodes_or_says_why(_mutate(REAL[kind], cut, changes))


@pytest.mark.slow(reason="a long campaign (thousands of examples); the default suite runs "
                         "the same properties on 40 examples each")
@LONG
@given(st.dictionaries(keys, values, max_size=6))
def test_long_campaign_on_recipes(recipe):
    test_recipes_of_random_keys_and_types_resolve_or_name_the_problem.hypothesis.inner_test(
        recipe)


def test_every_error_here_is_a_vggnet_error():
    assert issubclass(ImageReadError, VggnetError) and issubclass(ConfigError, VggnetError)
