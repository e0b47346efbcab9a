"""Probes that stream: a task split read shard by shard gives the batches, features and scores that the
same split gives in memory; one shard at a time is in memory."""
import numpy as np
import pytest
import torch
from torch import nn

from pipeline.downstream.head_training import shuffled_batches
from pipeline.downstream.glue import TASKS
from pipeline.downstream.heads import SpanHead
from pipeline.downstream.probe import ShardedBank, TokenBank, open_bank, probe_glue, span_logits
from pipeline.extraction.scale_fixture import write_scale_fixture

CFG = {"tune_fg": False, "probe_head_hidden": 8, "dropout": 0.1, "pooling": "mean", "probe_lr": 1e-2,
       "fg_lr": 1e-3, "probe_epochs": 3, "probe_batch_size": 5, "weight_decay": 0.01, "warmup_fraction": 0.1}


@pytest.fixture(scope="module")
def task_cache(tmp_path_factory):
    """A text cache of 36 items in 5 shards; the task lists them in its own (shuffled) order."""
    d = tmp_path_factory.mktemp("probe") / "train"
    write_scale_fixture(d, images=12, captions_per_image=3, tokens=6, text_dim=6, image_dim=4, grid=(2, 2),
                        prefix=1, shard_size=8)
    ids = [f"{i:07d}-{k}" for i in range(12) for k in range(3)]
    order = np.random.default_rng(0).permutation(len(ids))
    return d, [ids[i] for i in order]


def banks(task_cache):
    d, ids = task_cache
    memory, stream = open_bank(d, ids, memory_budget_gb=1.0), open_bank(d, ids, memory_budget_gb=0.0)
    assert not isinstance(memory, ShardedBank) and isinstance(stream, ShardedBank)
    return memory, stream


def test_streamed_and_in_memory_banks_give_the_same_batches_and_rows(task_cache):
    memory, stream = banks(task_cache)
    assert len(memory) == len(stream) == 36 and memory.dim == stream.dim == 6
    plan_m, plan_s = memory.epoch_batches(np.random.default_rng(4), 5), stream.epoch_batches(np.random.default_rng(4), 5)
    assert [b.tolist() for b in plan_m] == [b.tolist() for b in plan_s]
    assert sorted(np.concatenate(plan_s).tolist()) == list(range(36))
    for idx in plan_s:
        assert len(set(stream.item_shard[idx].tolist())) == 1           # a batch stays in one shard
        for a, b in zip(memory.gather(idx), stream.gather(idx)):
            assert torch.equal(a, b)
        (xa, ma), (xb, mb) = memory.padded(idx), stream.padded(idx)
        assert torch.equal(xa, xb) and torch.equal(ma, mb)


def test_streamed_bank_holds_one_shard(task_cache):
    _, stream = banks(task_cache)
    for idx in stream.epoch_batches(np.random.default_rng(1), 5):
        stream.gather(idx)
        rows, _ = stream._current[1]
        shard = stream._current[0]
        assert len(rows) == stream.lengths(np.flatnonzero(stream.item_shard == shard)).sum()
    with pytest.raises(ValueError, match="one shard per batch"):
        stream.gather(np.array([0, 1, 2, 3, 4, 5, 6, 7, 8]))           # items of several shards


def test_mapped_features_agree(task_cache):
    memory, stream = banks(task_cache)
    torch.manual_seed(0)
    f = nn.Sequential(nn.Linear(6, 4), nn.GELU())
    fn = lambda x: torch.cat([x, f(x)], -1)  # noqa: E731
    mm, ms = memory.mapped(fn), stream.mapped(fn)
    assert mm.dim == ms.dim == 10
    for idx in ms.ordered_batches(7):
        assert torch.equal(mm.gather(idx)[0], ms.gather(idx)[0])
    head = SpanHead(10, 8).eval()
    a, b = span_logits(head, mm, lambda x: x, batch=4), span_logits(head, ms, lambda x: x, batch=4)
    assert all(np.array_equal(x, y) for x, y in zip(a[0] + a[1], b[0] + b[1]))


@pytest.mark.parametrize("tune_fg, grounded", [(False, False), (False, True), (True, True)])
def test_probe_scores_are_the_same_streamed_or_in_memory(task_cache, tune_fg, grounded):
    memory, stream = banks(task_cache)
    y = np.random.default_rng(2).integers(0, 2, size=36)
    torch.manual_seed(1)
    g = nn.Sequential(nn.Linear(6, 4), nn.GELU()) if grounded else None
    cfg = {**CFG, "tune_fg": tune_fg}
    spec = TASKS["sst2"]
    a = probe_glue(spec, (memory, y), {"dev": (memory, y)}, g, cfg=cfg, seed=3)
    b = probe_glue(spec, (stream, y), {"dev": (stream, y)}, g, cfg=cfg, seed=3)
    assert a == b and 0.0 <= a["dev/accuracy"] <= 1.0


def test_one_shard_keeps_the_plain_shuffle():
    # A task that fits one shard (every fixture task) trains on the very batches it did before streaming.
    bank = TokenBank([np.zeros((2, 3), np.float16)] * 10, item_shard=None)
    assert [b.tolist() for b in bank.epoch_batches(np.random.default_rng(5), 3)] == \
        [b.tolist() for b in shuffled_batches(10, 3, np.random.default_rng(5))]
    one = TokenBank([np.zeros((2, 3), np.float16)] * 10, item_shard=np.zeros(10, np.int64))
    assert [b.tolist() for b in one.epoch_batches(np.random.default_rng(5), 3)] == \
        [b.tolist() for b in shuffled_batches(10, 3, np.random.default_rng(5))]


def test_items_missing_from_the_cache_are_an_error(task_cache):
    from pipeline.errors import CacheError

    d, ids = task_cache
    with pytest.raises(CacheError, match="not in the cache"):
        open_bank(d, ids + ["nope"], memory_budget_gb=0.0)


def test_a_float32_cache_is_held_as_stored_in_memory_too(task_cache, tmp_path):
    import shutil

    import h5py

    d, ids = task_cache
    f32 = tmp_path / "train"
    shutil.copytree(d, f32)
    rng = np.random.default_rng(1)
    for shard in sorted((f32 / "text").glob("*.h5")):
        with h5py.File(shard, "r+") as f:
            shape = f["states"].shape
            del f["states"]
            # float32 values float16 would round (and past its range, turn into inf)
            f["states"] = (rng.standard_normal(shape) * 1e5).astype(np.float32)
    memory, stream = open_bank(f32, ids, memory_budget_gb=1.0), open_bank(f32, ids, memory_budget_gb=0.0)
    for idx in stream.epoch_batches(np.random.default_rng(0), 5):
        for a, b in zip(memory.gather(idx), stream.gather(idx)):
            assert torch.equal(a, b)
        assert torch.isfinite(memory.gather(idx)[0]).all()
