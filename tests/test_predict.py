"""Prediction on every awkward kind of image file, and errors that name the file."""

import json

import numpy as np
import pytest
from PIL import Image

from vggnet.cli import main
from vggnet.errors import ImageReadError
from vggnet.io import open_image
from vggnet.predict import Predictor

from helpers import train_tiny_run, write_image


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("predict") / "run"
    train_tiny_run(out)
    return out


def _awkward(folder):
    write_image(folder / "rgb.jpg", size=(300, 200))
    write_image(folder / "grey.png", "L")
    write_image(folder / "rgba.png", "RGBA")
    write_image(folder / "palette.gif", "P")
    write_image(folder / "cmyk.jpg", "CMYK")
    write_image(folder / "deep.png", "I;16")
    write_image(folder / "tiny.png", size=(3, 5))
    im = Image.fromarray(np.zeros((10, 20, 3), np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    im.save(folder / "rotated.jpg", exif=exif)
    return folder


def test_every_image_mode_is_read_as_rgb(tmp_path):
    folder = _awkward(tmp_path)
    for path in folder.iterdir():
        im = open_image(path)
        assert im.mode == "RGB", path
    assert open_image(folder / "rotated.jpg").size == (10, 20)  # EXIF orientation applied


@pytest.mark.parametrize("kind", ["text", "empty", "truncated", "missing"])
def test_unreadable_files_get_one_line_errors(tmp_path, kind):
    path = tmp_path / "bad.jpg"
    if kind == "text":
        path.write_text("hello, I am not a JPEG")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        write_image(tmp_path / "good.jpg", size=(64, 64))
        path.write_bytes((tmp_path / "good.jpg").read_bytes()[:200])
    with pytest.raises(ImageReadError) as err:
        open_image(path)
    assert "\n" not in str(err.value) and "bad.jpg" in str(err.value)


def _png_header(path, width: int, height: int):
    """A PNG that declares ``width`` x ``height`` pixels but holds none: Pillow reads the size
    from the header, so the limit can be tested at its real value without decoding anything."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data)))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_refused_at_pillows_real_limit(tmp_path):
    """Refused from the header alone above Pillow's MAX_IMAGE_PIXELS (the size where Pillow
    starts to warn), which vggnet reads and never changes."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    assert limit == 89_478_485  # Pillow's default: this process has not changed it
    side = int(limit ** 0.5)
    over = _png_header(tmp_path / "over.png", side + 1, side + 1)
    with pytest.raises(ImageReadError, match="too many pixels for a safe decode") as err:
        open_image(over)
    assert f"{side + 1} x {side + 1}" in str(err.value) and "\n" not in str(err.value)
    # at the limit itself the header passes; this file then fails as what it is, truncated
    at = _png_header(tmp_path / "at.png", limit, 1)
    with pytest.raises(ImageReadError, match="corrupt or truncated"):
        open_image(at)
    assert Image.MAX_IMAGE_PIXELS == limit  # Pillow's global setting is left alone


def test_predict_keeps_going_past_bad_files(run, tmp_path, capsys):
    folder = _awkward(tmp_path / "imgs")
    (folder / "notes.jpg").write_text("not an image")
    predictor = Predictor(run)
    results = predictor.predict(sorted(folder.iterdir()), top_k=3)
    assert len(results) == 9
    bad = [r for r in results if r.error]
    assert [r.path.endswith("notes.jpg") for r in bad] == [True]
    assert all(len(r.top) == 3 and abs(sum(p for _, p in r.top)) <= 1.0001 for r in results if not r.error)
    code = main(["predict", str(run), str(folder), "--json"])
    captured = capsys.readouterr()
    assert code == 1  # something failed, and says so
    assert len(json.loads(captured.out)) == 9
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "notes.jpg" in errors[0]
    assert captured.err.startswith("vggnet predict: torch backend, ")  # what ran, first


def test_predict_table_output(run, tmp_path, capsys):
    write_image(tmp_path / "a.png")
    assert main(["predict", str(run), str(tmp_path / "a.png"), "--top-k", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(tmp_path / "a.png")) and line.count("%") == 2


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nope"), "x.png"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_float_images_with_nan_are_refused_per_file(tmp_path):
    arr = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64)
    Image.fromarray(arr, "F").save(tmp_path / "ok.tif")
    arr[3, 4] = np.nan
    Image.fromarray(arr, "F").save(tmp_path / "nan.tif")
    assert open_image(tmp_path / "ok.tif").mode == "RGB"
    with pytest.raises(ImageReadError, match="nan.tif: pixel values include NaN") as err:
        open_image(tmp_path / "nan.tif")
    assert "\n" not in str(err.value)


def test_non_finite_tensors_are_refused_by_the_predictor(run):
    import torch

    predictor = Predictor(run)
    x = torch.zeros(3, 3, 32, 32)
    assert predictor.probabilities(x).shape == (3, 10)
    x[1, 0, 5, 5] = float("inf")
    with pytest.raises(ValueError, match=r"input images \[1\] hold NaN or infinite"):
        predictor.probabilities(x)


def test_corrupt_jpeg_gets_a_one_line_error_and_the_rest_go_on(run, tmp_path):
    write_image(tmp_path / "good.jpg", size=(64, 64))
    data = bytearray((tmp_path / "good.jpg").read_bytes())
    start = data.index(b"\xff\xda")  # scrambling the header tables past the start of scan
    data[20:start] = bytes(len(data[20:start]))
    (tmp_path / "corrupt.jpg").write_bytes(bytes(data))
    results = Predictor(run).predict([tmp_path / "corrupt.jpg", tmp_path / "good.jpg"], top_k=2)
    assert results[0].error and "corrupt.jpg" in results[0].error and "\n" not in results[0].error
    assert results[1].error is None and len(results[1].top) == 2


def test_a_folder_without_images_is_one_line(run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    assert main(["predict", str(run), str(tmp_path / "empty")]) != 0
    err = capsys.readouterr().err.strip()
    assert "holds no images" in err and "\n" not in err
