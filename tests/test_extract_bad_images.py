"""Bad images under --on-error fail (one clear line naming file and item) and skip (listed, captions dropped)."""
import json

import pytest

from extract_helpers import extract_args, make_dataset, run_cli
from pipeline.cache.format import load_images, load_text
from pipeline.cache.verify import verify_cache


@pytest.fixture
def broken(tmp_path):
    captions, images = make_dataset(tmp_path / "d", n_images=6, per_image=2)
    (images / "im001.png").write_bytes(b"")                                       # zero bytes
    data = (images / "im004.png").read_bytes()
    (images / "im004.png").write_bytes(data[: len(data) // 2])                     # truncated
    (images / "im005.png").unlink()                                               # missing
    return captions, images


def test_fail_stops_at_the_first_bad_image_naming_file_and_item(tmp_path, tiny, broken):
    r = run_cli(extract_args(*broken, tmp_path / "c", tiny, "--on-error", "fail", "--num-workers", "2"))
    assert r.exit_code == 2
    assert "im001.png" in r.output and "image im001" in r.output and "empty" in r.output
    assert "Traceback" not in r.output
    split = tmp_path / "c" / "train"
    assert not (split / "manifest.json").exists() and not list(split.rglob(".tmp-*"))


def test_skip_leaves_bad_images_out_and_lists_them_with_their_captions(tmp_path, tiny, broken):
    r = run_cli(extract_args(*broken, tmp_path / "c", tiny, "--on-error", "skip", "--num-workers", "2"))
    assert r.exit_code == 0, r.output
    assert "0 bad captions and 3 bad images skipped" in r.output
    split = tmp_path / "c" / "train"
    report = json.loads((split / "report.json").read_text())
    skipped = {s["image_id"]: s for s in report["skipped"]["images"]}
    assert sorted(skipped) == ["im001", "im004", "im005"]
    assert skipped["im001"]["file"] == "im001.png" and "empty" in skipped["im001"]["reason"]
    assert "truncated" in skipped["im004"]["reason"] and "not found" in skipped["im005"]["reason"]
    assert report["skipped"]["captions_of_skipped_images"] == ["c001_0", "c001_1", "c004_0", "c004_1", "c005_0", "c005_1"]
    assert load_images(split).image_ids == ["im000", "im002", "im003"]
    assert load_text(split).caption_ids == ["c000_0", "c000_1", "c002_0", "c002_1", "c003_0", "c003_1"]
    assert verify_cache(split) == []


def test_bad_captions_are_skipped_and_reported(tmp_path, tiny):
    captions, images = make_dataset(tmp_path / "d", n_images=4, per_image=1)
    lines = captions.read_text().splitlines()
    bad = json.loads(lines[1])
    bad["caption"] = "   "
    captions.write_text("\n".join([lines[0], json.dumps(bad), "{not json", *lines[2:]]) + "\n")
    r = run_cli(extract_args(captions, images, tmp_path / "c", tiny, "--on-error", "skip"))
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "c" / "train" / "report.json").read_text())
    assert len(report["skipped"]["captions"]) == 2
    assert load_text(tmp_path / "c" / "train").caption_ids == ["c000_0", "c002_0", "c003_0"]
    # the image of the skipped caption is not encoded either: no caption names it any more
    assert load_images(tmp_path / "c" / "train").image_ids == ["im000", "im002", "im003"]
    r = run_cli(extract_args(captions, images, tmp_path / "c2", tiny, "--on-error", "fail"))
    assert r.exit_code == 2 and "line 2" in r.output
