"""End-to-end extraction through the CLI on a tiny dataset with tiny encoders."""
import json
import os

import h5py
import numpy as np
import pytest

from extract_helpers import extract_args, make_dataset, run_cli, shard_bytes
from pipeline.cache.format import load_images, load_text
from pipeline.cache.verify import verify_cache


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), n_images=6, per_image=2, long_every=5)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny, data):
    """One uninterrupted run: the bytes every other way of building the cache must reproduce."""
    cache = tmp_path_factory.mktemp("ref")
    r = run_cli(extract_args(*data, cache, tiny))
    assert r.exit_code == 0, r.output
    return cache / "train"


def test_cache_contents_and_truncation_count(reference, data):
    text, images = load_text(reference), load_images(reference)
    lines = [json.loads(x) for x in data[0].read_text().splitlines()]
    assert text.caption_ids == sorted(x["caption_id"] for x in lines)
    assert images.image_ids == sorted({x["image_id"] for x in lines})  # each image once, with 2 captions
    assert images.patches.shape == (6, 16, 32) and images.prefix.shape == (6, 1, 32)  # 4x4 grid + CLS
    assert images.patches.dtype == np.float16
    lengths = np.diff(text.offsets)
    assert lengths.max() == 16 and text.states.shape == (lengths.sum(), 32)
    assert text.truncated.sum() == 2 and all(lengths[text.truncated] == 16)  # captions 5 and 10 of 12
    report = json.loads((reference / "report.json").read_text())
    assert report["truncated_captions"] == 2
    assert "timing" not in report  # report.json is deterministic; what varies goes to run.json
    run_log = json.loads((reference / "run.json").read_text())
    assert run_log["timing"]["image"]["items"] == 6 and run_log["timing"]["text"]["items"] == 12
    assert {"read", "infer", "write", "items_per_s"} <= set(run_log["timing"]["image"])
    sizes = dict(zip(images.image_ids, images.sizes.tolist()))
    from PIL import Image
    assert sizes["im000"] == list(Image.open(data[1] / "im000.png").size)
    assert verify_cache(reference) == []


def test_same_inputs_give_identical_bytes(tmp_path, reference, tiny, data):
    r = run_cli(extract_args(*data, tmp_path, tiny, "--text-batch-size", "5", "--image-batch-size", "2"))
    assert r.exit_code == 0, r.output
    assert shard_bytes(tmp_path / "train") == shard_bytes(reference)


def test_rerun_with_nothing_to_do_loads_no_model(reference, tiny, data, monkeypatch):
    import pipeline.encoders

    def boom(*a, **k):
        raise AssertionError("a model was loaded for a cache that is up to date")

    monkeypatch.setattr(pipeline.encoders, "load_text_encoder", boom)
    monkeypatch.setattr(pipeline.encoders, "load_image_encoder", boom)
    before = shard_bytes(reference)
    r = run_cli(extract_args(*data, reference.parent, tiny))
    assert r.exit_code == 0, r.output
    assert "up to date" in r.output
    assert shard_bytes(reference) == before


def test_other_configuration_fails_naming_the_fields(tmp_path, reference, tiny, data):
    import shutil
    cache = tmp_path / "c"
    shutil.copytree(reference.parent, cache)
    r = run_cli(extract_args(*data, cache, tiny, "--max-length", "12", "--storage-dtype", "float32"))
    assert r.exit_code == 2
    assert "text.max_length" in r.output and "storage_dtype" in r.output and "Traceback" not in r.output
    # --overwrite rebuilds it, but never deletes a file extraction did not write
    (cache / "train" / "notes.txt").write_text("mine")
    r = run_cli(extract_args(*data, cache, tiny, "--max-length", "12", "--overwrite"))
    assert r.exit_code == 2 and "notes.txt" in r.output
    (cache / "train" / "notes.txt").unlink()
    r = run_cli(extract_args(*data, cache, tiny, "--max-length", "12", "--overwrite"))
    assert r.exit_code == 0, r.output
    assert load_text(cache / "train").offsets[-1] < load_text(reference).offsets[-1]


def test_shard_subset_then_resume_equals_uninterrupted(tmp_path, reference, tiny, data):
    # Caption shard 2 (images im004, im005) needs image shard 1 first: which captions to drop is
    # known only once their images are decoded, so it waits.
    r = run_cli(extract_args(*data, tmp_path, tiny, "--shards", "0,2"))
    assert r.exit_code == 0, r.output
    split = tmp_path / "train"
    assert "partial" in r.output and "caption shards [2] wait" in r.output
    assert not (split / "manifest.json").exists()
    assert sorted(p.relative_to(split).as_posix() for p in split.rglob("*.h5")) == ["image/00000.h5", "text/00000.h5"]
    done = {p: os.stat(p).st_mtime_ns for p in split.rglob("*.h5")}
    stray = split / "text" / ".tmp-00000.h5.abc123"  # what a SIGKILL during a write leaves
    stray.write_bytes(b"half a shard")
    r = run_cli(extract_args(*data, tmp_path, tiny))
    assert r.exit_code == 0, r.output
    assert not stray.exists()
    assert all(os.stat(p).st_mtime_ns == t for p, t in done.items())  # done shards were not recomputed
    assert shard_bytes(split) == shard_bytes(reference)


def test_text_only_modality(tmp_path, tiny, data):
    r = run_cli(extract_args(*data, tmp_path, tiny, "--modality", "text", "--layer", "1"))
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "train" / "manifest.json").read_text())
    assert list(manifest["shards"]) == ["text"] and manifest["fingerprint"]["text"]["layer"] == 1
    with h5py.File(tmp_path / "train" / "text" / "00000.h5") as f:
        assert f["states"].shape[1] == 32
    assert verify_cache(tmp_path / "train") == []


def test_bad_options_are_one_clear_line(tmp_path, tiny, data):
    r = run_cli(extract_args(*data, tmp_path, tiny, "--modality", "audio"))
    assert r.exit_code == 2 and "--modality" in r.output
    r = run_cli(extract_args(*data, tmp_path, tiny, "--set", "extract.nope=1"))
    assert r.exit_code == 2 and "extract.nope" in r.output
    r = run_cli(extract_args(*data, tmp_path, tiny, "--split", "val"))
    assert r.exit_code == 2 and "split 'val'" in r.output
