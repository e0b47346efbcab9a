"""`verify_cache` and the `cache info` / `cache verify` commands on a real (tiny) cache, then damaged."""
import json
import shutil

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from extract_helpers import extract_args, make_dataset, run_cli, tiny_text_folder
from pipeline.cache.info import cache_info
from pipeline.cache.verify import verify_cache
from pipeline.io.hashing import file_sha256
from stages.cache_tools import app


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tiny = tiny_text_folder(tmp_path_factory)
    data = make_dataset(tmp_path_factory.mktemp("data"), n_images=6, per_image=2, long_every=4)
    cache = tmp_path_factory.mktemp("cache")
    assert run_cli(extract_args(*data, cache, tiny)).exit_code == 0
    return cache


@pytest.fixture
def cache(tmp_path, built):
    shutil.copytree(built, tmp_path / "cache")
    return tmp_path / "cache"


def test_sound_cache_verifies_and_info_describes_it(cache):
    assert verify_cache(cache / "train") == []
    r = CliRunner().invoke(app, ["verify", str(cache)])
    assert r.exit_code == 0 and r.output.startswith("OK ")
    info = cache_info(cache / "train")
    assert info["complete"] and info["modalities"]["text"]["items"] == 12
    assert info["modalities"]["image"]["grid"] == [4, 4] and info["modalities"]["image"]["dim"] == 32
    r = CliRunner().invoke(app, ["info", str(cache / "train")])
    assert r.exit_code == 0, r.output
    for want in ("train: complete", "12 captions", "6 images, grid 4x4 (1 prefix tokens), dim 32",
                 "3 captions truncated", "storage float16", "text: 3/3 shards"):
        assert want in r.output, (want, r.output)


def test_flipped_bytes_are_caught_by_the_checksum(cache):
    shard = cache / "train" / "image" / "00001.h5"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    problems = verify_cache(cache / "train")
    assert any("00001.h5" in p and "sha256" in p for p in problems)
    r = CliRunner().invoke(app, ["verify", str(cache)])
    assert r.exit_code == 1 and "FAILED" in r.output and "image/00001.h5" in r.output


def test_missing_shard_and_stray_shard(cache):
    (cache / "train" / "text" / "00002.h5").rename(cache / "train" / "text" / "00009.h5")
    problems = verify_cache(cache / "train")
    assert any("text/00002.h5: missing" in p for p in problems)
    assert any("00009.h5: shard not listed" in p for p in problems)


def _rewrite(shard, name, edit, manifest_path):
    """Change a dataset in place, then re-record the checksum, so only the content checks can notice."""
    with h5py.File(shard, "r+") as f:
        data = f[name][()]
        f[name][...] = edit(data)
    manifest = json.loads(manifest_path.read_text())
    for entries in manifest["shards"].values():
        for e in entries:
            if manifest_path.parent / e["file"] == shard:
                e["sha256"] = file_sha256(shard)
    manifest_path.write_text(json.dumps(manifest))


def test_non_finite_values_and_broken_offsets(cache):
    split = cache / "train"

    def nan_row(a):
        a = a.copy()
        a[3, 5] = np.nan
        return a

    _rewrite(split / "text" / "00001.h5", "states", nan_row, split / "manifest.json")
    _rewrite(split / "image" / "00000.h5", "patches", lambda a: np.where(a > 1, np.inf, a).astype(a.dtype),
             split / "manifest.json")
    _rewrite(split / "text" / "00002.h5", "offsets", lambda a: a[::-1].copy(), split / "manifest.json")
    problems = verify_cache(split)
    assert not any("sha256" in p for p in problems)
    assert any("text/00001.h5: non-finite values in states (first at row 3)" in p for p in problems)
    assert any("image/00000.h5: non-finite values in patches" in p for p in problems)
    assert any("text/00002.h5: offsets not monotone" in p for p in problems)


def test_captions_naming_images_not_in_the_cache(cache):
    split = cache / "train"
    _rewrite(split / "text" / "00000.h5", "image_ids", lambda a: np.array([b"ghost"] * len(a), dtype=a.dtype),
             split / "manifest.json")
    assert any("absent from the image shards" in p and "ghost" in p for p in verify_cache(split))


def test_incomplete_cache_and_not_a_cache(cache, tmp_path):
    (cache / "train" / "manifest.json").unlink()
    assert "incomplete" in verify_cache(cache / "train")[0]
    r = CliRunner().invoke(app, ["info", str(cache)])
    assert r.exit_code == 0 and "INCOMPLETE" in r.output
    r = CliRunner().invoke(app, ["verify", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "no feature cache" in r.output
