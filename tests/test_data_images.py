"""load_rgb on every kind of image a real dataset throws at it; the bad files are built here."""
import io
import pickle

import numpy as np
import pytest
from PIL import Image

from pipeline.data.images import load_rgb, to_rgb
from pipeline.errors import DataError


def noisy(size=(64, 48), seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def expect_error(path, match, item="img-7"):
    with pytest.raises(DataError, match=match) as info:
        load_rgb(path, item=item)
    assert info.value.file == str(path) and info.value.item == item
    assert str(path) in str(info.value) and item in str(info.value)
    return info.value


def test_rgb_png_round_trips_exactly(tmp_path):
    src = noisy()
    src.save(tmp_path / "a.png")
    out = load_rgb(tmp_path / "a.png")
    assert out.mode == "RGB" and out.size == (64, 48)
    assert np.array_equal(np.asarray(out), np.asarray(src))


def test_missing_zero_byte_and_directory(tmp_path):
    expect_error(tmp_path / "nope.jpg", "not found")
    (tmp_path / "empty.png").write_bytes(b"")
    expect_error(tmp_path / "empty.png", "zero bytes")
    (tmp_path / "dir.png").mkdir()
    expect_error(tmp_path / "dir.png", "not a regular file")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_is_an_error(tmp_path, fmt):
    buf = io.BytesIO()
    noisy((128, 128)).save(buf, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    expect_error(path, "corrupt or truncated")


def test_garbage_bytes_are_not_an_image(tmp_path):
    path = tmp_path / "junk.jpg"
    path.write_bytes(b"this is a text file, not a photo\n" * 10)
    expect_error(path, "not a recognised image format")


def test_corrupt_png_body(tmp_path):
    buf = io.BytesIO()
    noisy((64, 64)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[200:260] = bytes(60)  # zero out part of the compressed IDAT stream
    (tmp_path / "bad.png").write_bytes(bytes(data))
    expect_error(tmp_path / "bad.png", "corrupt or truncated")


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    px = np.asarray(load_rgb(tmp_path / "cmyk.jpg"))[8, 8].astype(int)
    assert px[0] > 230 and px[1] < 30 and px[2] < 30  # cyan-free, full magenta+yellow = red


def test_palette_with_transparency_composites_on_white(tmp_path):
    img = Image.new("P", (4, 2), 0)
    img.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    img.putpixel((0, 0), 1)
    img.info["transparency"] = 0
    img.save(tmp_path / "pal.png", transparency=0)
    assert Image.open(tmp_path / "pal.png").mode == "P"
    a = np.asarray(load_rgb(tmp_path / "pal.png"))
    assert tuple(a[0, 0]) == (200, 0, 0)  # opaque palette entry keeps its colour
    assert tuple(a[1, 3]) == (255, 255, 255)  # transparent (black underneath) shows white


def test_plain_palette_and_grayscale(tmp_path):
    Image.new("RGB", (8, 8), (10, 120, 230)).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    assert tuple(np.asarray(load_rgb(tmp_path / "p.png"))[0, 0]) == (10, 120, 230)
    Image.new("L", (8, 8), 77).save(tmp_path / "g.png")
    assert tuple(np.asarray(load_rgb(tmp_path / "g.png"))[3, 3]) == (77, 77, 77)


def test_rgba_and_la_composite_on_white(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)
    rgba[0, 1] = (255, 0, 0, 128)
    rgba[1, 0] = (0, 0, 0, 0)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    a = np.asarray(load_rgb(tmp_path / "rgba.png")).astype(int)
    assert tuple(a[0, 0]) == (255, 0, 0)
    assert a[0, 1, 0] == 255 and abs(a[0, 1, 1] - 127) <= 1 and abs(a[0, 1, 2] - 127) <= 1
    assert tuple(a[1, 0]) == (255, 255, 255)

    la = Image.new("LA", (2, 1), (0, 255))
    la.putpixel((1, 0), (0, 0))
    la.save(tmp_path / "la.png")
    b = np.asarray(load_rgb(tmp_path / "la.png"))
    assert tuple(b[0, 0]) == (0, 0, 0) and tuple(b[0, 1]) == (255, 255, 255)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 32896, 65535, 1000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    a = np.asarray(load_rgb(tmp_path / "deep.png"))
    assert a.shape == (1, 5, 3)
    assert list(a[0, :, 0]) == [0, 100, 128, 255, 4]  # round(v / 257); clipping would give 255 for most
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()


def test_32_bit_and_float_modes():
    wide = Image.fromarray(np.array([[-1000, 0, 3000]], dtype=np.int32), "I")
    assert list(np.asarray(to_rgb(wide))[0, :, 0]) == [0, 64, 255]  # no standard range: own min..max
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F")
    assert list(np.asarray(to_rgb(unit))[0, :, 0]) == [0, 128, 255]


def test_one_pixel_image_is_valid(tmp_path):
    Image.new("RGB", (1, 1), (1, 2, 3)).save(tmp_path / "dot.png")
    out = load_rgb(tmp_path / "dot.png")
    assert out.size == (1, 1) and out.getpixel((0, 0)) == (1, 2, 3)


def test_exif_orientation_6_rotates_clockwise(tmp_path):
    # Stored 60 wide x 30 tall with a red block at the stored top-left; orientation 6 means
    # "rotate 90 degrees clockwise to display", which carries that corner to the top-right.
    img = Image.new("RGB", (60, 30), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 15))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    out = load_rgb(tmp_path / "phone.jpg")
    assert out.size == (30, 60)
    a = np.asarray(out).astype(int)
    assert a[5, 25, 0] > 200 and a[5, 25, 2] < 60  # top-right is red
    assert a[5, 4, 2] > 200 and a[5, 4, 0] < 60  # top-left is blue
    assert a[55, 25, 2] > 200  # bottom-right is blue


@pytest.mark.parametrize("side", [12, 20])  # 144 px: Pillow only warns; 400 px: past twice the limit, it raises
def test_decompression_bomb_is_an_error(tmp_path, monkeypatch, side):
    Image.new("RGB", (side, side)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    expect_error(tmp_path / "bomb.png", "decompression-bomb limit is 100 pixels")


def test_plain_function_usable_in_workers(tmp_path):
    noisy((8, 8)).save(tmp_path / "w.png")
    fn = pickle.loads(pickle.dumps(load_rgb))
    out = fn(tmp_path / "w.png")
    (tmp_path / "w.png").unlink()  # fully decoded: nothing still reads from the file
    assert np.asarray(out).shape == (8, 8, 3)
