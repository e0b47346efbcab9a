"""The on-disk cache contract shared by stage one (writer) and stage two (reader)."""
import hashlib
import json

import numpy as np
import pytest

from pipeline.cache import format as fmt
from pipeline.cache.fingerprint import check_fingerprint
from pipeline.errors import CacheError
from pipeline.io.atomic import write_json_atomic
from pipeline.io.hashing import digest, file_sha256


def _write_split(split_dir, rng, n_captions=(3, 2), d=8):
    shards = {"text": [], "image": []}
    cap = 0
    for s, count in enumerate(n_captions):
        lengths = rng.integers(3, 7, size=count)
        path = fmt.shard_path(split_dir, "text", s)
        fmt.write_text_shard(
            path, states=[rng.normal(size=(n, d)).astype(np.float32) for n in lengths],
            token_ids=[np.arange(n) for n in lengths], char_spans=[np.zeros((n, 2)) for n in lengths],
            caption_ids=[f"c{cap + i}" for i in range(count)], image_ids=[f"i{(cap + i) % 2}" for i in range(count)],
            truncated=[False] * count, storage_dtype="float16")
        cap += count
        shards["text"].append({"file": str(path.relative_to(split_dir)), "sha256": file_sha256(path)})
    path = fmt.shard_path(split_dir, "image", 0)
    fmt.write_image_shard(path, patches=rng.normal(size=(2, 4, d)), prefix=rng.normal(size=(2, 1, d)),
                         image_ids=["i0", "i1"], sizes=[[10, 20], [30, 40]], grid=(2, 2),
                         num_prefix_tokens=1, storage_dtype="float16")
    shards["image"].append({"file": str(path.relative_to(split_dir)), "sha256": file_sha256(path)})
    write_json_atomic(split_dir / fmt.MANIFEST, {"fingerprint": {"a": 1, "enc": {"name": "x"}}, "shards": shards})


def test_round_trip_concatenates_shards(tmp_path):
    rng = np.random.default_rng(0)
    _write_split(tmp_path, rng)
    text = fmt.load_text(tmp_path)
    assert text.caption_ids == ["c0", "c1", "c2", "c3", "c4"]
    assert text.offsets[0] == 0 and text.offsets[-1] == len(text.states) == len(text.token_ids)
    assert np.all(np.diff(text.offsets) >= 3)
    assert text.states.dtype == np.float16
    images = fmt.load_images(tmp_path)
    assert images.patches.shape == (2, 4, 8) and images.prefix.shape == (2, 1, 8)
    assert images.grid == (2, 2) and images.num_prefix_tokens == 1 and images.image_ids == ["i0", "i1"]


def test_same_inputs_give_identical_bytes(tmp_path):
    _write_split(tmp_path / "a", np.random.default_rng(1))
    _write_split(tmp_path / "b", np.random.default_rng(1))
    for rel in ("text/00000.h5", "text/00001.h5", "image/00000.h5"):
        a, b = (hashlib.sha256((tmp_path / x / rel).read_bytes()).hexdigest() for x in ("a", "b"))
        assert a == b, rel


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "text" / "00000.h5"
    with pytest.raises(RuntimeError):
        with fmt.atomic_h5(final) as f:
            f.create_dataset("x", data=np.zeros(3))
            raise RuntimeError("killed mid-write")
    assert not final.exists()
    assert list((tmp_path / "text").iterdir()) == []


def test_incomplete_and_missing_caches_are_explained(tmp_path):
    with pytest.raises(CacheError, match="not found"):
        fmt.open_manifest(tmp_path / "nope")
    (tmp_path / "split").mkdir()
    write_json_atomic(tmp_path / "split" / fmt.PLAN, {"fingerprint": {}})
    with pytest.raises(CacheError, match="interrupted"):
        fmt.open_manifest(tmp_path / "split")
    (tmp_path / "split" / fmt.MANIFEST).write_text("{\n  bad")
    with pytest.raises(CacheError, match="line 2 column 3"):
        fmt.open_manifest(tmp_path / "split")


def test_fingerprint_mismatch_names_the_fields(tmp_path):
    _write_split(tmp_path, np.random.default_rng(0))
    check_fingerprint(tmp_path, {"a": 1, "enc": {"name": "x"}}, which=fmt.MANIFEST)
    with pytest.raises(CacheError, match=r"enc\.name \(cache: 'x', now: 'y'\)"):
        check_fingerprint(tmp_path, {"a": 1, "enc": {"name": "y"}}, which=fmt.MANIFEST)


def test_corrupt_shard_is_a_cache_error(tmp_path):
    _write_split(tmp_path, np.random.default_rng(0))
    (tmp_path / "image" / "00000.h5").write_bytes(b"not hdf5")
    with pytest.raises(CacheError, match="image/00000.h5"):
        fmt.load_images(tmp_path)


def test_ids_round_trip_unicode():
    ids = ["plain", "ünïcödé", "日本", ""]
    assert fmt.decode_ids(fmt.encode_ids(ids)) == ids
    assert json.dumps(digest({"b": 1, "a": 2})) == json.dumps(digest({"a": 2, "b": 1}))


def test_image_shard_without_prefix_tokens(tmp_path):
    """A CNN's feature map has no CLS/register tokens: P = 0 must write and read back."""
    path = tmp_path / "image" / "00000.h5"
    fmt.write_image_shard(path, patches=np.ones((2, 4, 8)), prefix=np.zeros((2, 0, 8)), image_ids=["a", "b"],
                         sizes=[[1, 1], [2, 2]], grid=(2, 2), num_prefix_tokens=0, storage_dtype="float16")
    write_json_atomic(tmp_path / fmt.MANIFEST, {"fingerprint": {}, "shards": {"image": [{"file": "image/00000.h5"}]}})
    images = fmt.load_images(tmp_path)
    assert images.prefix.shape == (2, 0, 8) and images.num_prefix_tokens == 0
