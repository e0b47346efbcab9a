"""Unit tests of the shard plan, the fingerprint and length bucketing (no encoders)."""
import numpy as np
import pytest

from pipeline.cache.fingerprint import cheap_part, make_fingerprint
from pipeline.encoders import Tokens
from pipeline.encoders.text import length_batches
from pipeline.errors import ConfigError
from pipeline.extraction.plan import TextItem, make_plan, my_shards, parse_shards, shard_ranges, split_digest
from pipeline.extraction.timing import merge_summaries
from pipeline.records import CaptionRecord


def test_shard_ranges_are_contiguous_and_cover_everything():
    assert shard_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert shard_ranges(0, 4) == []
    with pytest.raises(ConfigError):
        shard_ranges(3, 0)


def test_ranks_partition_the_shards_whatever_the_world_size():
    for world in (1, 2, 3, 8):
        taken = sorted(i for r in range(world) for i in my_shards(11, r, world, None))
        assert taken == list(range(11))
    assert my_shards(11, 1, 2, [0, 3, 5]) == [3, 5]


def test_parse_shards():
    assert parse_shards("0,3,5-7") == [0, 3, 5, 6, 7]
    assert parse_shards(None) is None
    with pytest.raises(ConfigError, match="--shards"):
        parse_shards("a,b")
    with pytest.raises(ConfigError):
        parse_shards("-1")


def _records(texts):
    return [CaptionRecord(f"c{i}", t, f"im{i % 2}", f"im{i % 2}.png") for i, t in enumerate(texts)]


def test_split_digest_changes_with_any_text_or_id_and_not_with_order():
    recs = _records(["a red circle", "a blue square", "two shapes"])
    d = split_digest(recs)
    assert d == split_digest(list(reversed(recs)))
    assert d["captions_sha256"] != split_digest(_records(["a red circle", "a blue square", "two shape"]))["captions_sha256"]
    moved = recs[:2] + [CaptionRecord("c2", "two shapes", "im1", "other.png")]
    assert split_digest(moved)["images_sha256"] == d["images_sha256"]  # im1 keeps its first path
    assert split_digest(moved)["captions_sha256"] != d["captions_sha256"]  # but c2 now names im1


def test_plan_lists_shards_with_id_ranges_and_cheap_part_drops_encoder_entries():
    fp = make_fingerprint(modalities=["text", "image"], split={"x": 1}, shard_size=2, storage_dtype="float16",
                          compute_dtype="float32", text={"model": "m", "encoder": {"weights_sha256": "abc"}},
                          image={"model": "v", "image_size": 32, "encoder": {"weights_sha256": "def"}})
    plan = make_plan(fp, ["a", "b", "c"], ["x"], 2)
    assert [s["file"] for s in plan["shards"]["text"]] == ["text/00000.h5", "text/00001.h5"]
    assert plan["shards"]["text"][1] == {"file": "text/00001.h5", "items": 1, "first_id": "c", "last_id": "c"}
    assert plan["shards"]["image"][0]["items"] == 1
    cheap = cheap_part(fp)
    assert "encoder" not in cheap["text"] and cheap["image"] == {"model": "v", "image_size": 32}
    assert cheap["modalities"] == ["image", "text"]


def test_length_batches_group_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, 50)
    items = [TextItem(f"c{i}", "", Tokens(np.zeros(n, np.int32), np.zeros((n, 2), np.int32), False))
             for i, n in enumerate(lengths)]
    batches = length_batches([len(it.tokens.ids) for it in items], 8)
    assert sorted(i for b in batches for i in b) == list(range(50))
    flat = [len(items[i].tokens.ids) for b in batches for i in b]
    assert flat == sorted(flat)
    padded = sum(len(b) * max(len(items[i].tokens.ids) for i in b) for b in batches)
    assert padded < 1.2 * lengths.sum()  # random order would pad to ~1.7x here


def test_merge_summaries_adds_items_and_takes_the_slowest_rank():
    part = {"items": 10, "wall_s": 2.0, "items_per_s": 5.0,
            **{p: {"batches": 2, "total_s": 1.0, "mean_s": 0.5, "p90_s": 0.6} for p in ("read", "infer", "write")}}
    m = merge_summaries([part, dict(part, wall_s=4.0)])
    assert m["items"] == 20 and m["items_per_s"] == 5.0 and m["infer"]["batches"] == 4
    assert merge_summaries([{}, None]) == {"items": 0, "ranks": 0}
