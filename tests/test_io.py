"""vggnet.io, the one image decoder and the one atomic write: every image mode to 8-bit RGB,
EXIF rotation, JPEG draft decoding, the decompression-bomb limit, one-line errors that name
the file, the resize and crop of data sets and prediction, and writes that a crash or a full
disk never leave half done."""

import errno
import hashlib
import io as bytes_io
import json
import os
import stat

import numpy as np
import pytest
from PIL import Image

from vggnet import io
from vggnet.errors import ImageReadError, ImageTooLargeError, NotAnImageError, StorageError


def _png(im) -> bytes:
    buf = bytes_io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _jpeg(w, h, colour=(200, 30, 60), **kw) -> bytes:
    buf = bytes_io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


# --- names and modes -----------------------------------------------------------------------

@pytest.mark.parametrize("name, ok", [
    ("a.jpg", True), ("A.JPEG", True), ("x/y.Png", True), ("b.webp", True), ("c.tiff", True),
    (".hidden.jpg", False), ("notes.txt", False), ("jpg", False), ("archive.jpg.gz", False),
])
def test_image_names(name, ok):
    assert io.is_image_name(name) is ok


def test_every_mode_becomes_8_bit_rgb():
    rgb = io.to_rgb(Image.new("L", (2, 1), 77))
    assert rgb.mode == "RGB" and np.asarray(rgb).tolist() == [[[77] * 3] * 2]
    cmyk = io.to_rgb(Image.new("CMYK", (1, 1), (0, 255, 255, 0)))
    assert np.asarray(cmyk)[0, 0].tolist() == [255, 0, 0]
    same = Image.new("RGB", (1, 1), (1, 2, 3))
    assert io.to_rgb(same) is same  # already RGB: not copied


def test_16_bit_images_are_scaled_by_their_depth():
    sixteen = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    assert sixteen.mode.startswith("I;16")
    assert np.asarray(io.to_rgb(sixteen))[0, :, 0].tolist() == [0, 128, 255]
    # 32-bit integers: 16-bit values when any exceeds 255, else already 8-bit values
    wide = Image.fromarray(np.array([[0, 300, 65535]], dtype=np.int32), "I")
    assert np.asarray(io.to_rgb(wide))[0, :, 1].tolist() == [0, 1, 255]
    narrow = Image.fromarray(np.array([[0, 100, 200, 255]], dtype=np.int32), "I")
    assert np.asarray(io.to_rgb(narrow))[0, :, 2].tolist() == [0, 100, 200, 255]
    # 256 is already more than 8 bits; values outside 16 bits are clipped, not wrapped
    odd = Image.fromarray(np.array([[-5, 256, 70000, 65407]], dtype=np.int32), "I")
    assert np.asarray(io.to_rgb(odd))[0, :, 0].tolist() == [0, 1, 255, 255]
    for mode in ("I;16B", "I;16L"):  # 16-bit in either byte order
        raw = np.array([[0, 32896, 65407, 65535]], dtype=">u2" if mode.endswith("B") else "<u2")
        im = Image.frombytes(mode, (4, 1), raw.tobytes())
        assert np.asarray(io.to_rgb(im))[0, :, 1].tolist() == [0, 128, 255, 255], mode
    dark = Image.fromarray(np.array([[65407 - 257]], dtype=np.uint16))
    assert np.asarray(io.to_rgb(dark))[0, 0, 0] == 254  # 65150 / 65535 of 255, rounded
    # a 16-bit image is 16-bit even when all its values are small (a nearly black scan)
    faint = Image.fromarray(np.array([[0, 128, 200]], dtype=np.uint16))
    assert faint.mode == "I;16" and np.asarray(io.to_rgb(faint))[0, :, 0].tolist() == [0, 0, 1]
    # 32-bit: 256 alone is past 8 bits; negative values are black, never wrapped to white
    edge = Image.fromarray(np.array([[0, 256]], dtype=np.int32), "I")
    assert np.asarray(io.to_rgb(edge))[0, :, 0].tolist() == [0, 1]
    negative = Image.fromarray(np.array([[-300, -70000, 65535]], dtype=np.int32), "I")
    assert np.asarray(io.to_rgb(negative))[0, :, 0].tolist() == [0, 0, 255]


def test_float_images_are_read_as_0_to_1_and_nan_is_refused():
    f = Image.fromarray(np.array([[-1.0, 0.5, 2.0]], dtype=np.float32), "F")
    assert np.asarray(io.to_rgb(f))[0, :, 0].tolist() == [0, 128, 255]
    bad = Image.fromarray(np.array([[0.1, np.nan]], dtype=np.float32), "F")
    with pytest.raises(ImageReadError, match="NaN or infinity"):
        io.to_rgb(bad)
    inf = Image.fromarray(np.array([[np.inf]], dtype=np.float32), "F")
    with pytest.raises(ImageReadError):
        io.to_rgb(inf)


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (10, 20, 30, 255))
    assert np.asarray(io.to_rgb(rgba))[0].tolist() == [[255, 255, 255], [10, 20, 30]]
    la = Image.new("LA", (1, 1), (0, 0))
    assert np.asarray(io.to_rgb(la))[0, 0].tolist() == [255, 255, 255]
    # a palette image with a transparent index, and one without transparency
    pal = Image.new("P", (2, 1), 0)
    pal.putpalette([0, 0, 0, 9, 8, 7] + [0] * 762)
    pal.putpixel((1, 0), 1)
    assert np.asarray(io.to_rgb(pal))[0].tolist() == [[0, 0, 0], [9, 8, 7]]
    pal.info["transparency"] = 0
    assert np.asarray(io.to_rgb(pal))[0].tolist() == [[255, 255, 255], [9, 8, 7]]
    # a palette image with an alpha channel of its own (PA)
    pa = Image.new("PA", (2, 1))
    pa.putpalette([9, 8, 7] * 256)
    pa.putpixel((0, 0), (0, 0))
    pa.putpixel((1, 0), (0, 255))
    assert np.asarray(io.to_rgb(pa))[0].tolist() == [[255, 255, 255], [9, 8, 7]]


# --- opening ---------------------------------------------------------------------------------

def test_bytes_and_paths_open_alike_with_exif_rotation(tmp_path):
    im = Image.fromarray(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10)
    exif = im.getexif()
    exif[0x0112] = 6  # shown rotated by 90 degrees clockwise
    path = tmp_path / "r.png"
    im.save(path, exif=exif)
    a, b = io.open_image(path), io.open_image(path.read_bytes())
    assert a.size == b.size == (2, 3) and a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert np.array_equal(np.asarray(a), np.rot90(np.asarray(im), -1))


@pytest.mark.parametrize("src, message", [
    (b"", "image: empty file (0 bytes)"),
    (_jpeg(64, 64)[:300], "image: corrupt or truncated image"),
    (b"plain text, no image", "image: not an image Pillow can read (is it really an image?)"),
])
def test_bad_bytes_are_one_line_errors_that_start_with_the_name(src, message):
    with pytest.raises(ImageReadError) as info:
        io.open_image(src)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    with pytest.raises(ImageReadError, match=f"^upload.png: {message[7:17]}"):
        io.open_image(src, name="upload.png")


def test_bad_files_are_named_with_what_is_wrong(tmp_path):
    with pytest.raises(ImageReadError, match=f"^{tmp_path / 'none.jpg'}: no such file$"):
        io.open_image(tmp_path / "none.jpg")
    with pytest.raises(ImageReadError, match="^.*folder: no such file"):
        io.open_image(tmp_path, name=f"{tmp_path}/folder")
    empty = tmp_path / "e.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match=f"^{empty}: empty file"):
        io.open_image(empty)
    text = tmp_path / "t.jpg"
    text.write_text("hello")
    with pytest.raises(NotAnImageError, match=r"t.jpg: not an image .* \(is it really \.jpg\?\)"):
        io.open_image(text)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(_jpeg(64, 64)[:200])
    with pytest.raises(ImageReadError, match=f"^{cut}: corrupt or truncated image"):
        io.open_image(cut)


def test_a_nan_image_error_names_the_file_once(tmp_path):
    path = tmp_path / "f.tif"
    Image.fromarray(np.array([[np.nan]], dtype=np.float32), "F").save(path)
    with pytest.raises(ImageReadError) as info:
        io.open_image(path)
    assert str(info.value) == f"{path}: pixel values include NaN or infinity; fix or drop the image"


def test_images_at_the_pixel_limit_open_and_one_more_pixel_is_refused(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 12)
    assert io.max_image_pixels() == 12
    assert io.open_image(_png(Image.new("RGB", (4, 3)))).size == (4, 3)
    with pytest.raises(ImageTooLargeError) as info:
        io.open_image(_png(Image.new("RGB", (13, 1))), name="big.png")
    assert str(info.value) == ("big.png: refused, 13 x 1 is too many pixels for a safe decode "
                               "(more than 12); downscale it first")
    with pytest.raises(ImageTooLargeError):  # 4 x 4 = 16 pixels, however square
        io.open_image(_png(Image.new("RGB", (4, 4))))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # a program that lifted the limit
    assert io.max_image_pixels() is None
    assert io.open_image(_png(Image.new("RGB", (13, 1)))).size == (13, 1)


def test_pillows_own_bomb_error_is_a_vggnet_error(monkeypatch):
    def bomb(*a, **k):
        raise Image.DecompressionBombError("too big")

    monkeypatch.setattr(Image, "open", bomb)
    with pytest.raises(ImageTooLargeError, match="^x.png: refused, too many pixels .*too big"):
        io.open_image(b"anything", name="x.png")


def test_draft_decodes_a_jpeg_at_a_reduced_scale_never_below_the_size_asked():
    data = _jpeg(800, 600)
    assert io.open_image(data).size == (800, 600)
    assert io.open_image(data, draft=150).size == (200, 150)  # 1/4: shorter side exactly 150
    assert io.open_image(data, draft=151).size == (400, 300)  # 1/4 would go below 151
    assert io.open_image(data, draft=600).size == (800, 600)
    assert io.open_image(_png(Image.new("RGB", (800, 600))), draft=150).size == (800, 600)
    # down to 1/8 where a side becomes a single pixel, on either side
    assert io.open_image(_jpeg(8, 64), draft=1).size == (1, 8)
    assert io.open_image(_jpeg(64, 8), draft=1).size == (8, 1)


# --- resizing --------------------------------------------------------------------------------

def test_resize_shorter_side_keeps_the_aspect_and_never_goes_below_the_size():
    assert io.resize_shorter_side(Image.new("RGB", (400, 300)), 30).size == (40, 30)
    assert io.resize_shorter_side(Image.new("RGB", (300, 400)), 30).size == (30, 40)
    assert io.resize_shorter_side(Image.new("RGB", (10, 10)), 32).size == (32, 32)  # upscaled
    assert io.resize_shorter_side(Image.new("RGB", (1001, 1000)), 3).size == (3, 3)


def test_the_image_resize_is_the_tensor_resize_of_training_within_one_level():
    """Prediction resizes Pillow images, training resizes tensors: both bilinear and
    antialiased, so the network sees the same pixels (to one level of rounding)."""
    import torch

    from vggnet.data.augment import resize_shorter

    rng = np.random.default_rng(0)
    arr = np.asarray(Image.fromarray((rng.random((60, 80, 3)) * 255).astype(np.uint8))
                     .resize((160, 120), Image.NEAREST))  # hard edges, where filters differ
    tensor = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None]
    for size in (24, 50, 200):
        want = resize_shorter(tensor, size)[0].permute(1, 2, 0).numpy().astype(int)
        got = np.asarray(io.resize_shorter_side(Image.fromarray(arr), size)).astype(int)
        assert got.shape == want.shape and np.abs(got - want).max() <= 1, size


def test_resize_is_bilinear_and_antialiased():
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes average to grey when shrunk with antialiasing
    small = np.asarray(io.resize_shorter_side(Image.fromarray(stripes), 8)).astype(int)
    assert abs(small.mean() - 127.5) < 3 and small.std() < 10


def test_center_crop_takes_the_middle():
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, 5:15] = 255  # the middle 10 columns are white
    out = io.resize_center_crop(Image.fromarray(arr), 10)
    assert out.size == (10, 10) and np.asarray(out).min() == 255
    assert io.resize_center_crop(Image.fromarray(arr), 10, crop=4).size == (4, 4)
    odd = np.zeros((10, 17, 3), np.uint8)
    odd[:, 3:13] = 255  # a margin of 7: three columns on the left, four on the right
    out = np.asarray(io.resize_center_crop(Image.fromarray(odd), 10))
    assert out.min() == 255
    odd_rows = np.zeros((17, 10, 3), np.uint8)
    odd_rows[3:13] = 255
    assert np.asarray(io.resize_center_crop(Image.fromarray(odd_rows), 10)).min() == 255
    tall = np.zeros((20, 10, 3), np.uint8)
    tall[5:15] = 255
    assert np.asarray(io.resize_center_crop(Image.fromarray(tall), 10)).min() == 255


def test_decode_image_gives_uint8_hwc_at_the_size_asked():
    data = _jpeg(90, 60)
    full = io.decode_image(data)
    assert full.shape == (60, 90, 3) and full.dtype == np.uint8
    small = io.decode_image(data, size=32)
    assert small.shape == (32, 32, 3)
    assert np.abs(small.astype(int) - [200, 30, 60]).max() <= 3
    square = io.decode_image(_png(Image.new("RGB", (32, 32), (1, 2, 3))), size=32)
    assert square[0, 0].tolist() == [1, 2, 3]


def test_decode_image_drafts_large_jpegs_and_names_the_file_in_errors(monkeypatch):
    from PIL import JpegImagePlugin

    drafts = []
    real = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft",
                        lambda self, mode, size: (drafts.append(size), real(self, mode, size))[1])
    assert io.decode_image(_jpeg(800, 600), size=64).shape == (64, 64, 3)
    assert drafts == [(85, 64)]  # decoded at a reduced scale, still at least 64 px
    with pytest.raises(ImageReadError, match="^photo.jpg: empty file"):
        io.decode_image(b"", size=64, name="photo.jpg")


def test_find_images_expands_folders_recursively_in_order(tmp_path):
    for rel in ("b/2.png", "a/1.jpg", "a/deeper/0.png", "a/.hidden.png", "a/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = io.find_images([tmp_path / "a", tmp_path / "b", tmp_path / "loose.jpg"])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a/1.jpg", "a/deeper/0.png", "b/2.png", "loose.jpg"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="empty: folder holds no images"):
        io.find_images([tmp_path / "empty"])


# --- atomic writes ---------------------------------------------------------------------------

def _fail_with(code):
    def write(tmp):
        tmp.write_bytes(b"half a file")
        raise OSError(code, "simulated")
    return write


@pytest.mark.parametrize("code, why", [(errno.ENOSPC, "the disk is full"),
                                       (errno.EDQUOT, "the disk quota is used up"),
                                       (errno.EROFS, "the folder is on a read-only file system"),
                                       (errno.EACCES, "no permission to write there"),
                                       (errno.EPERM, "no permission to write there")])
def test_a_full_or_read_only_disk_is_one_line_and_keeps_the_old_file(tmp_path, code, why):
    target = tmp_path / "last.safetensors"
    target.write_bytes(b"the previous checkpoint")
    with pytest.raises(StorageError) as info:
        io.atomic_write(target, _fail_with(code))
    message = str(info.value)
    assert message.startswith(f"cannot write {target}: {why} (simulated)")
    assert "\n" not in message and "previous version" in message and "--resume" in message
    assert info.value.errno == code and info.value.strerror == "simulated"
    assert info.value.filename == str(target) and isinstance(info.value, OSError)
    assert target.read_bytes() == b"the previous checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]  # no temporary left


def test_other_errors_are_not_disguised_and_keep_the_old_file(tmp_path):
    target = tmp_path / "x"
    target.write_text("old")
    with pytest.raises(OSError) as info:
        io.atomic_write(target, _fail_with(errno.EIO))
    assert not isinstance(info.value, StorageError)

    def explode(p):
        p.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        io.atomic_write(target, explode)
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_a_storage_error_raised_inside_a_write_passes_unchanged(tmp_path):
    inner = StorageError("cannot write the other file: the disk is full")
    inner.errno = errno.ENOSPC

    def write(tmp):
        raise inner

    with pytest.raises(StorageError) as info:
        io.atomic_write(tmp_path / "x", write)
    assert info.value is inner


def test_a_write_replaces_the_file_is_synced_and_readable_by_others(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(io.os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_mode),
                                                     real_fsync(fd)))
    target = tmp_path / "sub" / "dir" / "f.bin"  # the folders are made
    assert io.atomic_write(target, lambda p: p.write_bytes(b"new")) == target
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    # the file is synced before the rename, its folder after it
    assert [stat.S_ISREG(m) for m in synced] == [True, False]
    assert stat.S_ISDIR(synced[1])
    io.atomic_write(target, lambda p: p.write_bytes(b"newer"))
    assert target.read_bytes() == b"newer" and sorted(os.listdir(target.parent)) == ["f.bin"]


def test_write_json_and_sha256(tmp_path):
    path = io.write_json(tmp_path / "m.json", {"a": 1, "p": tmp_path})
    text = path.read_text()
    assert text.endswith("}\n") and json.loads(text) == {"a": 1, "p": str(tmp_path)}
    assert '\n  "a": 1' in text  # indented, for people
    big = tmp_path / "big"
    data = os.urandom((1 << 20) + 17)  # more than one block
    big.write_bytes(data)
    assert io.sha256_file(big) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert io.sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
