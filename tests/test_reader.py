"""The cache reader: in-memory and streaming give the same batches, captions find their images, errors are clear."""
import pickle

import numpy as np
import pytest
import torch

from pipeline.errors import CacheError, ConfigError
from pipeline.modules import StageTwoModules
from pipeline.training.reader import SplitReader, epoch_loader, image_subset
from stage2_fixtures import make_split


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    d = tmp_path_factory.mktemp("cache") / "train"
    data = make_split(d, n_images=10, captions_per_image=3, shard_size=7)   # 5 text shards, 2 image shards
    return d, data


def all_batches(reader, batch_size=4, seed=0, workers=0):
    return list(epoch_loader(reader, batch_size, seed=seed, num_workers=workers))


@pytest.mark.parametrize("seed", [None, 0, [0, 3]])
def test_epoch_loader_gives_the_same_batches_whether_the_split_fits_in_memory_or_not(split, seed):
    # The budget decides only how the split is read (checkpoint.RESUMABLE lets it change on resume), so
    # the same seed must give the same epoch: same captions per batch, hence the same negatives.
    d, _ = split
    memory, stream = SplitReader(d, memory_budget_gb=1.0), SplitReader(d, memory_budget_gb=0.0)
    assert memory.in_memory and not stream.in_memory
    a, b = all_batches(memory, batch_size=4, seed=seed), all_batches(stream, batch_size=4, seed=seed)
    assert len(a) == len(b) == len(stream.plan(batch_size=4, seed=seed)) > 1
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k


def test_batches_hold_the_right_features(split):
    d, data = split
    reader = SplitReader(d, memory_budget_gb=0.0)
    seen = []
    for batch in all_batches(reader, batch_size=5, seed=3):
        rows = batch["image_index"].numpy()
        assert len(set(rows.tolist())) == len(rows)                   # each image once per batch
        for i, c in enumerate(batch["caption_index"].tolist()):
            seen.append(c)
            states = data["states"][c]
            n = len(states)
            assert batch["token_mask"][i].sum() == n                  # padded to the batch's longest
            assert np.allclose(batch["h"][i, :n].float().numpy(), states.astype(np.float16), equal_nan=True)
            assert not batch["h"][i, n:].any()
            # The caption's image: the one its image id names, its patches exactly as stored.
            row = rows[batch["image_slot"][i]]
            assert reader.image_ids[row] == data["image_ids"][c]
            assert np.array_equal(batch["patches"][batch["image_slot"][i]].numpy(),
                                  data["patches"][row].astype(np.float16))
            # Content tokens: not [CLS] (position 0), not [SEP] (last), not padding.
            assert batch["content_mask"][i].tolist() == [False] + [True] * (n - 2) + [False] * (len(batch["h"][i]) - n + 1)
    assert sorted(seen) == list(range(reader.num_captions))            # an epoch covers every caption once


def test_epochs_shuffle_differently_and_reproducibly(split):
    d, _ = split
    reader = SplitReader(d)
    order = lambda seed: [b["caption_index"].tolist() for b in all_batches(reader, seed=seed)]
    assert order([0, 1]) == order([0, 1])
    assert order([0, 1]) != order([0, 2])


def test_streaming_batches_stay_within_a_text_shard(split):
    d, _ = split
    reader = SplitReader(d, memory_budget_gb=0.0)
    for captions in reader.plan(batch_size=4, seed=0):
        assert len(set(reader.caption_shard[captions].tolist())) == 1


def test_dataloader_workers_cover_every_caption_once(split):
    d, _ = split
    reader = SplitReader(d, memory_budget_gb=0.0)
    reader.image_rows(np.array([0, 9]))                 # opens handles in this process before the fork
    batches = all_batches(reader, batch_size=4, seed=0, workers=2)
    got = sorted(c for b in batches for c in b["caption_index"].tolist())
    assert got == list(range(reader.num_captions))


def test_dataloader_workers_keep_the_plan_order(split):
    # Workers own whole shards and the DataLoader alternates between them; the epoch must not notice.
    d, _ = split
    reader = SplitReader(d, memory_budget_gb=0.0)
    assert len(reader.text_files) > 1  # several shards, so the workers really interleave
    alone, with_workers = all_batches(reader, seed=3, workers=0), all_batches(reader, seed=3, workers=2)
    assert [b["caption_index"].tolist() for b in with_workers] == [b["caption_index"].tolist() for b in alone]
    for a, b in zip(alone, with_workers):
        assert all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in a)


def test_in_plan_order_restores_any_arrival_order():
    from pipeline.training.reader import in_plan_order

    assert list(in_plan_order([(2, "c"), (0, "a"), (3, "d"), (1, "b")])) == ["a", "b", "c", "d"]
    assert list(in_plan_order([])) == []


def test_open_handles_never_travel_to_a_worker(split):
    d, _ = split
    reader = SplitReader(d, memory_budget_gb=0.0)
    reader.image_rows(np.array([1]))
    assert reader._handles
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._handles == {}
    assert np.array_equal(clone.image_rows(np.array([1]))[0], reader.image_rows(np.array([1]))[0])


def test_global_image_token_is_cls_or_patch_mean():
    patches, prefix = torch.randn(2, 5, 3), torch.randn(2, 2, 3)
    assert torch.equal(StageTwoModules.global_token(prefix, patches, class_token=True), prefix[:, 0])
    assert torch.allclose(StageTwoModules.global_token(prefix[:, :0], patches, class_token=False), patches.mean(1))


# ----------------------------------------------------------------------------- bad caches

def test_missing_cache(tmp_path):
    with pytest.raises(CacheError, match="not found"):
        SplitReader(tmp_path / "nope")


def test_incomplete_cache(tmp_path):
    make_split(tmp_path / "s", n_images=2)
    (tmp_path / "s" / "manifest.json").unlink()
    with pytest.raises(CacheError, match="incomplete"):
        SplitReader(tmp_path / "s")


@pytest.mark.parametrize("budget", [1.0, 0.0])
def test_corrupt_shard_names_the_file(tmp_path, budget):
    make_split(tmp_path / "s", n_images=4)
    shard = tmp_path / "s" / "image" / "00000.h5"
    shard.write_bytes(shard.read_bytes()[:500])
    with pytest.raises(CacheError, match="00000.h5"):
        reader = SplitReader(tmp_path / "s", memory_budget_gb=budget)
        all_batches(reader)


def test_split_without_captions(tmp_path):
    make_split(tmp_path / "s", n_images=0)
    with pytest.raises(CacheError, match="no captions"):
        SplitReader(tmp_path / "s")


@pytest.mark.parametrize("budget", [1.0, 0.0])
@pytest.mark.parametrize("field, changes", [("grid", {"grid": (2, 8)}),
                                             ("class_token", {"class_token": False})])
def test_image_shards_that_disagree_name_both_files_and_the_field(tmp_path, budget, field, changes):
    from pipeline.cache.format import write_image_shard

    data = make_split(tmp_path / "s", n_images=6, shard_size=3)           # image shards 00000 and 00001
    kwargs = dict(patches=data["patches"][3:], prefix=data["prefix"][3:], image_ids=data["image_ids"][3:],
                  sizes=data["sizes"][3:], grid=(4, 4), num_prefix_tokens=1, storage_dtype="float16")
    write_image_shard(tmp_path / "s" / "image" / "00001.h5", **{**kwargs, **changes})
    with pytest.raises(CacheError, match=rf"image/00001\.h5.*{field}.*image/00000\.h5"):
        SplitReader(tmp_path / "s", memory_budget_gb=budget)


def test_prefetch_stops_when_the_consumer_does():
    import threading
    import time

    from pipeline.training.reader import prefetch

    before = set(threading.enumerate())
    produced = []

    def endless():
        for i in range(10**9):
            produced.append(i)
            yield i

    batches = prefetch(endless(), depth=2)
    assert [next(batches), next(batches)] == [0, 1]
    (producer,) = set(threading.enumerate()) - before
    batches.close()                                   # what a `break` or an exception in the step does
    producer.join(timeout=1.0)
    assert not producer.is_alive()
    time.sleep(0.1)
    assert len(produced) <= 6                         # it stopped, it did not run on in the background


def test_streamed_image_block_and_row_gathers_give_the_same_batches(split, monkeypatch):
    # A streamed text shard's images are read as one contiguous block when compact, else row by row.
    from pipeline.training import reader as reader_module

    d, _ = split
    blocked = SplitReader(d, memory_budget_gb=0.0)
    with_block = all_batches(blocked, seed=2)
    assert blocked._block is not None
    monkeypatch.setattr(reader_module, "IMAGE_BLOCK_BYTES", 0)
    gathered = SplitReader(d, memory_budget_gb=0.0)
    without = all_batches(gathered, seed=2)
    assert gathered._block is None
    for a, b in zip(with_block, without):
        assert torch.equal(a["patches"], b["patches"]) and torch.equal(a["prefix"], b["prefix"])


# ----------------------------------------------------------------------------- train.train_images

def planned_images(reader, batch_size=4, seed=0) -> set[str]:
    return {reader.caption_image_ids[c] for b in reader.plan(batch_size, seed) for c in b}


@pytest.mark.parametrize("budget", [1.0, 0.0])
def test_a_subset_holds_n_images_with_all_their_captions(split, budget):
    d, data = split
    reader = SplitReader(d, memory_budget_gb=budget)
    reader.keep_images(4)
    kept = planned_images(reader)
    captions = sorted(c for b in reader.plan(4, [0, 1]) for c in b)
    assert len(kept) == reader.used_images == 4
    assert captions == [c for c, i in enumerate(data["image_ids"]) if i in kept]   # every caption of those, once
    assert reader.used_captions == len(captions) == 12
    # fit's steps per epoch (from the unshuffled plan) are those of a shuffled epoch of the subset.
    assert len(reader.plan(4, None)) == len(reader.plan(4, 5)) < len(SplitReader(d).plan(4, None))
    batches = all_batches(reader, batch_size=4, seed=2)
    assert {reader.image_ids[r] for b in batches for r in b["image_index"].tolist()} == kept
    reader.keep_images(None)
    assert reader.used_images == 10 and len(planned_images(reader)) == 10


def test_subsets_are_nested_and_do_not_depend_on_the_seed_or_the_order(split):
    d, _ = split
    reader = SplitReader(d)
    subsets = []
    for n in (2, 5, 8, 10):
        reader.keep_images(n)
        by_seed = [planned_images(reader, seed=[s, 0]) for s in (0, 1, 7)]   # train.seed varies, the data does not
        assert by_seed[0] == by_seed[1] == by_seed[2]
        subsets.append(by_seed[0])
    assert all(a < b for a, b in zip(subsets, subsets[1:]))
    # The subset is a function of the image ids alone: the same whatever the order they are listed in.
    ids = list(reader.image_ids)
    assert {ids[r] for r in image_subset(ids, 5)} == {ids[::-1][r] for r in image_subset(ids[::-1], 5)} == subsets[1]


def test_more_images_than_the_split_holds_is_one_line_naming_key_value_and_count(split):
    d, _ = split
    reader = SplitReader(d)
    with pytest.raises(ConfigError) as caught:
        reader.keep_images(11)
    assert str(caught.value) == f"train.train_images=11 is more than the 10 images of the split {d}"
    reader.keep_images(10)
    assert reader.used_captions == reader.num_captions
