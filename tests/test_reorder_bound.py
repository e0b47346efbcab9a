"""DataLoader workers and the reorder buffer: batches arrive in plan order at any num_workers, and the
batches held while waiting for an earlier one stay under (workers - 1) shards' worth, whatever the shard count."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline.extraction.scale_fixture import write_scale_fixture
from pipeline.training.reader import EpochBatches, SplitReader, epoch_loader, in_plan_order, worker_rounds


def round_robin(streams):
    """What the DataLoader does with an IterableDataset: one item from each live worker in turn."""
    its, live = [iter(s) for s in streams], list(range(len(streams)))
    while live:
        for k in list(live):
            try:
                yield next(its[k])
            except StopIteration:
                live.remove(k)


def by_shard_id(run_lengths, shard_ids, workers):
    """The old assignment: a worker owns the shards whose id is its number modulo the worker count."""
    starts = np.concatenate([[0], np.cumsum(run_lengths)])
    out = [[] for _ in range(workers)]
    for r, s in enumerate(shard_ids):
        out[s % workers] += range(starts[r], starts[r + 1])
    return out


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_rounds_bound_the_reorder_buffer_for_any_shard_sizes(workers):
    rng = np.random.default_rng(workers)
    runs = rng.integers(1, 10, size=300).tolist()               # 300 shards of 1..9 batches, in plan order
    stats = {}
    streams = [[(i, i) for i in mine] for mine in worker_rounds(runs, workers)]
    out = list(in_plan_order(round_robin(streams), stats))
    assert out == list(range(sum(runs)))                          # every batch once, in plan order
    assert stats["max_waiting"] <= (workers - 1) * max(runs)


def test_assigning_shards_by_id_lets_the_backlog_grow():
    # The simulation above can fail: the old assignment, on the same kind of epoch, breaks the bound.
    rng = np.random.default_rng(0)
    runs = [8] * 300
    stats = {}
    streams = [[(i, i) for i in mine] for mine in by_shard_id(runs, rng.permutation(300), 2)]
    assert list(in_plan_order(round_robin(streams), stats)) == list(range(2400))
    assert stats["max_waiting"] > 3 * 8


def test_every_round_levels_the_workers():
    rounds = worker_rounds([3, 1, 2, 5, 4], 2)
    assert rounds == [[0, 1, 2, 4, 5, -1, -1, -1, 11, 12, 13, 14], [3, -1, -1, 6, 7, 8, 9, 10]]
    assert worker_rounds([], 3) == [[], [], []]


@pytest.fixture(scope="module")
def many_shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("many") / "train"
    # 41 text shards (40 of 3 captions and a last of 1), 11 image shards of tiny features.
    write_scale_fixture(d, images=61, captions_per_image=2, tokens=5, text_dim=4, image_dim=4, grid=(2, 2),
                        prefix=1, shard_size=3)
    return d


@pytest.mark.parametrize("workers", [2])   # more processes than the suite's two cores only slows it
def test_real_dataloader_workers_keep_plan_order_within_the_bound(many_shards, workers):
    reader = SplitReader(many_shards, memory_budget_gb=0.0)
    plan = reader.plan(batch_size=2, seed=5)                 # 2 batches per full shard, 1 for the last
    stats = {}
    loader = DataLoader(EpochBatches(reader, plan, workers), batch_size=None, num_workers=workers,
                        prefetch_factor=2)
    got = list(in_plan_order(loader, stats))
    alone = list(epoch_loader(reader, 2, seed=5, num_workers=0))
    assert [b["caption_index"].tolist() for b in got] == [b["caption_index"].tolist() for b in alone]
    assert all(torch.equal(a["patches"], b["patches"]) for a, b in zip(got, alone))
    assert stats["max_waiting"] <= (workers - 1) * 2
    assert len(loader) == sum(len(reader.worker_indices(plan, w, workers)) for w in range(workers))
