"""Photos with an EXIF orientation: rotated when the block reads, kept as stored and reported when it is
broken (real JPEG files, their EXIF bytes damaged the way a bad writer or a truncated copy leaves them)."""
import json
import re
import warnings

import pytest
from PIL import Image

from extract_helpers import extract_args, make_dataset, run_cli
from pipeline.cache.format import load_images
from pipeline.data.images import load_rgb


def jpeg_with_orientation(path, damage=None):
    """A 40x20 JPEG whose EXIF says "rotate 90" (orientation 6); `damage` (offset, bytes) overwrites bytes of
    its TIFF header, counted from the header's start."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20), (200, 10, 10)).save(path, "JPEG", exif=exif.tobytes())
    if damage is not None:
        data = bytearray(path.read_bytes())
        header = data.index(b"Exif\x00\x00") + 6
        offset, value = damage
        data[header + offset:header + offset + len(value)] = value
        path.write_bytes(bytes(data))
    return path


def test_a_sound_exif_orientation_is_applied_and_reports_nothing(tmp_path):
    notes = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = load_rgb(jpeg_with_orientation(tmp_path / "ok.jpg"), item="image ok", warnings_out=notes)
    assert image.size == (20, 40) and notes == []


@pytest.mark.parametrize("damage,why", [
    ((4, b"\xff\xff\xff\x00"), r"first tag directory at byte 4294967040 lies past the block's end"),
    ((0, b"XX"), r"byte order b'XX' is neither II nor MM"),
    ((2, b"\x00\x00"), r"magic number 42 is missing"),
])
def test_a_broken_exif_block_keeps_the_pixels_unrotated_and_says_so(tmp_path, damage, why):
    path = jpeg_with_orientation(tmp_path / "bad.jpg", damage)
    notes = []
    image = load_rgb(path, item="image bad", warnings_out=notes)
    assert image.size == (40, 20) and image.mode == "RGB"          # encoded as stored
    assert image.getpixel((5, 5))[0] > 150                          # the pixels themselves are intact
    assert len(notes) == 1 and notes[0]["file"] == str(path) and notes[0]["item"] == "image bad"
    assert notes[0]["reason"].startswith("broken EXIF block (") and notes[0]["reason"].endswith("not rotated")
    assert re.search(why, notes[0]["reason"]), notes[0]["reason"]
    # A caller that collects nothing still hears of it.
    with pytest.warns(RuntimeWarning, match=rf"bad\.jpg: broken EXIF block .*{why}"):
        load_rgb(path)


def test_no_exif_block_is_not_a_problem(tmp_path):
    Image.new("RGB", (8, 6)).save(tmp_path / "plain.jpg", "JPEG")
    notes = []
    assert load_rgb(tmp_path / "plain.jpg", warnings_out=notes).size == (8, 6) and notes == []


def test_extraction_encodes_the_photo_and_lists_the_warning_in_its_report(tmp_path, tiny):
    captions, images = make_dataset(tmp_path / "d", n_images=4, per_image=1)
    jpeg_with_orientation(images / "im002.jpg", damage=(0, b"XX"))
    captions.write_text(captions.read_text().replace("im002.png", "im002.jpg"))
    r = run_cli(extract_args(captions, images, tmp_path / "c", tiny, "--on-error", "fail"))
    assert r.exit_code == 0, r.output
    split = tmp_path / "c" / "train"
    report = json.loads((split / "report.json").read_text())
    assert report["skipped"]["images"] == []
    [warning] = report["warnings"]["images"]
    assert warning["file"] == "im002.jpg" and warning["item"] == "image im002" and warning["image_id"] == "im002"
    assert warning["reason"].startswith("broken EXIF block (byte order b'XX'") and "not rotated" in warning["reason"]
    assert load_images(split).image_ids == ["im000", "im001", "im002", "im003"]
    assert tuple(load_images(split).sizes[2]) == (40, 20)       # as stored: width 40, height 20
