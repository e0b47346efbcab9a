"""`extract --dry-run`: the estimate against the real size of a small cache, and the refusal when space is short."""
import re

import pytest

from extract_helpers import extract_args, make_dataset, run_cli, tiny_text_folder
from pipeline.extraction import sizing


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), n_images=11, per_image=3, long_every=7)


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    return tiny_text_folder(tmp_path_factory)


def folder_bytes(split_dir):
    return sum(p.stat().st_size for p in split_dir.rglob("*") if p.is_file() and p.name != ".lock")


def test_dry_run_estimate_is_within_5_percent_of_the_real_cache(tmp_path, data, text_model):
    captions, images = data
    cache = tmp_path / "cache"
    r = run_cli(extract_args(captions, images, cache, text_model, "--dry-run"))
    assert r.exit_code == 0, r.output
    assert not (cache / "train").exists()                       # a dry run writes nothing
    assert "records 33, unique images 11" in r.output
    assert "shards: text 9, image 3" in r.output
    estimate = int(re.search(r"total .* \((\d+) bytes\)", r.output).group(1))
    assert "time unknown" in r.output                            # nothing extracted here yet

    r = run_cli(extract_args(captions, images, cache, text_model))
    assert r.exit_code == 0, r.output
    real = folder_bytes(cache / "train")
    assert abs(estimate - real) <= 0.05 * real, (estimate, real)

    # Now a run.json with these encoders sits under the cache root: its rate gives the time.
    r = run_cli(extract_args(captions, images, cache, text_model, "--dry-run"))
    assert "measured here earlier" in r.output and "estimated time" in r.output, r.output


def test_real_run_refuses_when_the_disk_is_too_small(tmp_path, data, text_model, monkeypatch):
    captions, images = data
    monkeypatch.setattr(sizing, "free_bytes", lambda path: 10_000)
    r = run_cli(extract_args(captions, images, tmp_path / "cache", text_model))
    assert r.exit_code == 2, r.output
    assert "needs about" in r.output and "has 9.8 KiB free" in r.output
    assert len([x for x in r.output.strip().splitlines() if x.strip()]) == 1          # one line
    assert not list((tmp_path / "cache").rglob("*.h5"))                                # no shard written


def test_shard_layout_arithmetic():
    # A 1024-row chunking pads the last chunk; a one-row chunking (image patches) does not.
    assert sizing._alloc(1500, 1024, 10) == (2048 * 10, 2)
    assert sizing._alloc(500, 1024, 10) == (500 * 10, 1)
    assert sizing._alloc(7, 1, 3) == (21, 7)
    assert sizing._alloc(0, 1024, 10) == (0, 0)
