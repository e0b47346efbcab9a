"""Batches of cached features for training and evaluation.

A split whose shards fit in `memory_budget_gb` is read into memory once (in its storage dtype, float16 by
default, so it costs what it weighs on disk). A larger one streams: each text shard is read whole when
its turn comes, its captions shuffled within it, with its images when they are a compact run of rows
(`load_image_block`); otherwise each batch gathers its images' rows from the image shards (one chunk per
image). Both cases share one shape: the split is a list of text "shards" (one in memory, or the files)
and of image shards.

Captions join their image by row index, and a batch holds each of its unique images once, however
many of its captions share it. Token states are padded per batch to the batch's longest caption.
Rows are read through the cache's `OpenShards`, which opens each file on first use in each process
(DataLoader worker).
`class_token` says whether each image's prefix starts with a class token, which stage two takes as p_0
(a split-wide property of the encoder, read once from the shards, not carried by every batch).
"""
from __future__ import annotations

import hashlib
import queue
import threading
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.cache.finite import check_image_rows, check_text_states
from pipeline.cache.format import (OpenShards, check_shards_agree, dataset_layout, decode_ids, open_manifest,
                                   prefix_has_class_token, read_shard, shard_files)
from pipeline.errors import CacheError, ConfigError

TEXT_META = ("offsets", "caption_ids", "image_ids")
IMAGE_BLOCK_BYTES = 256 << 20   # the most a streamed text shard's images are read at once (per worker)
TEXT_DATA = ("states", "offsets", "token_ids", "char_spans")
# The salt of the training-image subsets (train.train_images): a constant, not train.seed, so that runs with
# different seeds train on the same images and a data-size curve varies the data alone.
SUBSET_SALT = b"groundedbert-train-images-v1"


def image_subset(image_ids: list[str], n: int) -> np.ndarray:
    """Rows of the n images kept, sorted: the n smallest salted hashes of their ids. Nested (the first 200 are
    among the first 400) and a function of the ids alone, so the same image is kept whatever the split's order
    or the other images in it."""
    keys = [hashlib.blake2b(str(i).encode(), digest_size=8, key=SUBSET_SALT).digest() for i in image_ids]
    return np.sort(np.array(sorted(range(len(image_ids)), key=keys.__getitem__)[:n], dtype=np.int64))


class SplitReader:
    """One cached split: metadata always in memory, features in memory or streamed."""

    def __init__(self, split_dir: Path, memory_budget_gb: float = 4.0):
        self.split_dir = Path(split_dir)
        manifest = open_manifest(self.split_dir)
        self.fingerprint = manifest.get("fingerprint", {})
        # A text-only extraction (--modality text, or the downstream caches) plans no image shards at all;
        # an image list that is present but empty is a split without images, reported below.
        if "image" not in manifest.get("shards", {}) or "image" not in self.fingerprint.get("modalities", ["image"]):
            raise CacheError(f"file {self.split_dir}: the cache has no image features (extracted with the text "
                             f"modality only); training and evaluation need both: run `groundedbert extract` "
                             f"with --modality both")
        self.text_files = shard_files(self.split_dir, manifest, "text")
        self.image_files = shard_files(self.split_dir, manifest, "image")
        for f in self.text_files + self.image_files:
            if not f.exists():
                raise CacheError(f"file {f}: shard listed in the manifest is missing")
        self.nbytes = sum(f.stat().st_size for f in self.text_files + self.image_files)
        self.in_memory = self.nbytes <= memory_budget_gb * 2**30
        if self.in_memory:
            self._load_all()
        else:
            self._load_metadata()
        if self.num_captions == 0:
            raise CacheError(f"file {self.split_dir}: the split has no captions")
        rows = {image_id: r for r, image_id in enumerate(self.image_ids)}
        missing = [c for c, i in zip(self.caption_ids, self.caption_image_ids) if i not in rows]
        if missing:
            raise CacheError(f"file {self.split_dir}: caption {missing[0]} names an image that is not in the "
                             f"cache ({len(missing)} such captions)")
        self.caption_image = np.array([rows[i] for i in self.caption_image_ids], dtype=np.int64)
        self.caption_keep = None   # keep_images: the captions epoch plans draw from (None: all)
        self._handles = OpenShards()
        self._block = None   # streaming: (first row, end row, patches, prefix) of the current text shard's images

    # ------------------------------------------------------------------------- loading

    def _load_all(self) -> None:
        """Every shard into arrays sized up front, one shard at a time: the peak is the split plus one
        shard, never the split twice (as concatenating the shards would take)."""
        self._load_metadata()
        # Epoch plans follow the files' shards even in memory (caption_file_shard, from the metadata):
        # otherwise the same seed would give other batches (other negatives, another training run)
        # depending on whether the split fits the budget.
        text = [read_shard(p, ("offsets",)) for p in self.text_files]
        tokens = [int(t["offsets"][-1]) for t in text]
        shape, dtype = dataset_layout(self.text_files[0], "states")
        d_t = shape[1]
        merged = {"states": np.empty((sum(tokens), d_t), dtype), "token_ids": np.empty(sum(tokens), np.int32),
                  "char_spans": np.empty((sum(tokens), 2), np.int32)}
        offsets, row = [np.zeros(1, np.int64)], 0
        for path, n in zip(self.text_files, tokens):
            part = read_shard(path, TEXT_DATA)
            if int(part["offsets"][-1]) != n or len(part["states"]) != n:
                raise CacheError(f"file {path}: the shard's offsets disagree with its token states")
            check_text_states(path, part["states"], part["offsets"])
            for k in merged:
                merged[k][row:row + n] = part[k]
            offsets.append(part["offsets"][1:] + row)
            row += n
        merged["offsets"] = np.concatenate(offsets)
        if len(merged["offsets"]) - 1 != len(self.caption_ids):
            raise CacheError(f"file {self.split_dir}: the text shards' offsets disagree with their captions")
        self.text_shards = [merged]
        self.caption_shard = np.zeros(len(self.caption_ids), dtype=np.int64)
        self.caption_local = np.arange(len(self.caption_ids), dtype=np.int64)
        patches = prefix = None
        for s, path in enumerate(self.image_files):
            part = read_shard(path, ("patches", "prefix"))
            check_image_rows(path, part["patches"], part["prefix"])
            if patches is None:
                patches = np.empty((self.num_images,) + part["patches"].shape[1:], part["patches"].dtype)
                prefix = np.empty((self.num_images,) + part["prefix"].shape[1:], part["prefix"].dtype)
            rows = np.flatnonzero(self.image_shard == s)
            if len(rows) != len(part["patches"]) or part["patches"].shape[1:] != patches.shape[1:]:
                raise CacheError(f"file {path}: the shard's patches disagree with the split's other shards")
            patches[rows], prefix[rows] = part["patches"], part["prefix"]
        self.patches, self.prefix = patches, prefix

    def _load_metadata(self) -> None:
        self.caption_ids, self.caption_image_ids, shard_of, local = [], [], [], []
        for s, path in enumerate(self.text_files):
            meta = read_shard(path, TEXT_META)
            n = len(meta["offsets"]) - 1
            self.caption_ids += decode_ids(meta["caption_ids"])
            self.caption_image_ids += decode_ids(meta["image_ids"])
            shard_of.append(np.full(n, s, dtype=np.int64))
            local.append(np.arange(n, dtype=np.int64))
        self.text_shards = [None] * len(self.text_files)   # read when their turn comes
        self.caption_shard = np.concatenate(shard_of) if shard_of else np.zeros(0, np.int64)
        self.caption_local = np.concatenate(local) if local else np.zeros(0, np.int64)
        self.caption_file_shard = self.caption_shard
        if not self.caption_ids:
            raise CacheError(f"file {self.split_dir}: the split has no captions")
        if not self.image_files:
            raise CacheError(f"file {self.split_dir}: the split has no images")
        self.image_ids, sizes, counts, attrs = [], [], [], []
        for path in self.image_files:
            meta = read_shard(path, ("image_ids", "sizes"))
            self.image_ids += decode_ids(meta["image_ids"])
            sizes.append(meta["sizes"])
            counts.append(len(meta["sizes"]))
            attrs.append(meta["attrs"])
        first = check_shards_agree(self.image_files, attrs)
        self.grid = (int(first["grid_h"]), int(first["grid_w"]))
        self.class_token = prefix_has_class_token(first)
        self.sizes = np.concatenate(sizes)
        starts = np.concatenate([[0], np.cumsum(counts)])
        self.image_shard = np.searchsorted(starts, np.arange(starts[-1]), side="right") - 1
        self.image_local = np.arange(starts[-1]) - starts[self.image_shard]
        self.patches = self.prefix = None

    def __getstate__(self):   # what a spawned worker receives: no image block (OpenShards pickles empty)
        state = dict(self.__dict__)
        state["_block"] = None
        return state

    def text_shard(self, s: int) -> dict:
        if self.text_shards[s] is not None:
            return self.text_shards[s]
        part = read_shard(self.text_files[s], TEXT_DATA)
        check_text_states(self.text_files[s], part["states"], part["offsets"])
        return part

    def load_image_block(self, captions: np.ndarray) -> None:
        """Streaming: read the images of these captions (a text shard's) as one contiguous run of rows, when
        the run is compact, so each batch gathers its rows from memory. Captions and images are both stored
        sorted by id, so a text shard's images are usually consecutive (COCO: 1 024 captions, ~205 images,
        40 MB); a contiguous read costs a fraction of the CPU of per-row gathers from HDF5, which on a busy
        machine is what slows a streamed step, not waiting for the disk. Otherwise rows are gathered per batch."""
        self._block = None
        if self.patches is not None or len(captions) == 0:
            return
        rows = np.unique(self.caption_image[captions])
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        row_bytes = self._image_row_bytes()
        if hi - lo > 2 * len(rows) or (hi - lo) * row_bytes > IMAGE_BLOCK_BYTES:
            return
        parts = []
        for s in np.unique(self.image_shard[lo:hi]):
            span = np.flatnonzero(self.image_shard[lo:hi] == s) + lo
            a, b = int(self.image_local[span[0]]), int(self.image_local[span[-1]]) + 1
            path = self.image_files[s]
            pa, pr = self._handles.rows(path, ("patches", "prefix"), slice(a, b))
            check_image_rows(path, pa, pr, np.arange(a, b))
            parts.append((pa, pr))
        self._block = (lo, hi, np.concatenate([p for p, _ in parts]), np.concatenate([r for _, r in parts]))

    def _image_row_bytes(self) -> int:
        return self._handles.row_nbytes(self.image_files[0], ("patches", "prefix"))

    def image_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """patches (U, m, d_v) and prefix (U, P, d_v) of the given global image rows."""
        if self.patches is not None:
            return self.patches[rows], self.prefix[rows]
        block = self._block
        if block is not None and block[0] <= rows.min() and rows.max() < block[1]:
            return block[2][rows - block[0]], block[3][rows - block[0]]
        patches, prefix = [None] * len(rows), [None] * len(rows)
        for s in np.unique(self.image_shard[rows]):
            take = np.flatnonzero(self.image_shard[rows] == s)
            local = self.image_local[rows[take]]
            order = np.argsort(local)                    # HDF5 gathers need increasing indices
            path = self.image_files[s]
            pa, pr = self._handles.rows(path, ("patches", "prefix"), local[order])
            check_image_rows(path, pa, pr, local[order])
            for j, t in enumerate(take[order]):
                patches[t], prefix[t] = pa[j], pr[j]
        return np.stack(patches), np.stack(prefix)

    # ------------------------------------------------------------------------- batches

    @property
    def num_captions(self) -> int:
        return len(self.caption_ids)

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    def keep_images(self, n: int | None, key: str = "train.train_images") -> None:
        """Plan epochs over the captions of n of the split's images only (`image_subset`); None: all of them.
        Features stay indexed as in the split: only `plan` changes."""
        if n is None:
            self.caption_keep = None
            return
        captioned = np.unique(self.caption_image)   # an image without captions would add nothing to train on
        if n > len(captioned):
            raise ConfigError(f"{key}={n} is more than the {len(captioned)} images of the split {self.split_dir}")
        keep = np.zeros(self.num_images, dtype=bool)
        keep[captioned[image_subset([self.image_ids[r] for r in captioned], n)]] = True
        self.caption_keep = keep[self.caption_image]

    @property
    def used_captions(self) -> int:
        """The captions an epoch plan holds (all of them unless `keep_images` kept fewer)."""
        return self.num_captions if self.caption_keep is None else int(self.caption_keep.sum())

    @property
    def used_images(self) -> int:
        return self.num_images if self.caption_keep is None else len(np.unique(self.caption_image[self.caption_keep]))

    def dims(self) -> tuple[int, int]:
        """(d_t, d_v) of the cached features."""
        if self.in_memory:
            return self.text_shards[0]["states"].shape[1], self.patches.shape[2]
        (_, d_t), _ = dataset_layout(self.text_files[0], "states")
        (_, _, d_v), _ = dataset_layout(self.image_files[0], "patches")
        return d_t, d_v

    def plan(self, batch_size: int, seed: int | None) -> list[np.ndarray]:
        """Caption indices of each batch of an epoch: shards in a random order, captions shuffled within
        each shard (seed None: the stored order, for evaluation), only those `keep_images` kept. A batch
        never spans two text shards, so streaming reads each shard once per epoch. The shards are the files'
        in both modes, so a split in memory and the same split streamed give the same batches."""
        rng = np.random.default_rng(seed) if seed is not None else None
        shards = np.arange(len(self.text_files))
        if rng is not None:
            shards = rng.permutation(shards)
        batches = []
        for s in shards:
            in_shard = self.caption_file_shard == s
            idx = np.flatnonzero(in_shard if self.caption_keep is None else in_shard & self.caption_keep)
            if rng is not None:
                idx = rng.permutation(idx)
            batches += [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
        return batches

    def make_batch(self, captions: np.ndarray, shard: dict | None = None) -> dict:
        """Pad the captions' tokens and gather their images, each unique image once."""
        shard = shard if shard is not None else self.text_shard(int(self.caption_shard[captions[0]]))
        local = self.caption_local[captions]
        starts, ends = shard["offsets"][local], shard["offsets"][local + 1]
        lengths = ends - starts
        n, b = int(lengths.max()), len(captions)
        states = np.zeros((b, n, shard["states"].shape[1]), dtype=shard["states"].dtype)
        spans = np.zeros((b, n, 2), dtype=np.int32)
        token_mask = np.zeros((b, n), dtype=bool)
        for i, (s, e) in enumerate(zip(starts, ends)):
            states[i, : e - s] = shard["states"][s:e]
            spans[i, : e - s] = shard["char_spans"][s:e]
            token_mask[i, : e - s] = True
        # Content tokens have a character span; [CLS], [SEP] and padding have (0, 0).
        content = token_mask & (spans[..., 1] > spans[..., 0])
        content[:, 0] = False
        rows, slot = np.unique(self.caption_image[captions], return_inverse=True)
        patches, prefix = self.image_rows(rows)
        return {"h": torch.from_numpy(states), "token_mask": torch.from_numpy(token_mask),
                "content_mask": torch.from_numpy(content), "char_spans": torch.from_numpy(spans),
                "caption_index": torch.from_numpy(np.asarray(captions, dtype=np.int64)),
                "image_slot": torch.from_numpy(slot.astype(np.int64).reshape(-1)),
                "patches": torch.from_numpy(np.ascontiguousarray(patches)),
                "prefix": torch.from_numpy(np.ascontiguousarray(prefix)),
                "image_index": torch.from_numpy(rows.astype(np.int64))}

    def worker_indices(self, plan: list[np.ndarray], worker: int, workers: int) -> list[int]:
        """The plan indices `iter_batches` yields for this worker, -1 for padding."""
        if workers == 1 or len(self.text_shards) == 1:
            return [i for i in range(len(plan)) if i % workers == worker]
        runs = [len(r) for r in shard_runs(self.caption_shard[[int(c[0]) for c in plan]])] if plan else []
        return worker_rounds(runs, workers)[worker]

    def iter_batches(self, plan: list[np.ndarray], worker: int = 0, workers: int = 1, with_index: bool = False):
        """Yield the batches of `plan` that belong to this worker, reading each text shard once;
        with_index: (plan index, batch) pairs, and (-1, None) where `worker_rounds` pads a shorter shard.
        Streamed, a worker owns whole text shards (no two workers read the same one): the shards at plan
        positions worker, worker + workers, ... In memory there is nothing to read, so batches go round robin."""
        current, shard = None, None
        for i in self.worker_indices(plan, worker, workers):
            if i < 0:
                if with_index:
                    yield -1, None
                continue
            captions = plan[i]
            s = int(self.caption_shard[captions[0]])
            if s != current:
                current, shard = s, self.text_shard(s)
                if not self.in_memory:
                    self.load_image_block(np.flatnonzero(self.caption_shard == s))
            batch = self.make_batch(captions, shard)
            yield (i, batch) if with_index else batch


def shard_runs(batch_shards: np.ndarray) -> list[range]:
    """Plan indices grouped into runs of consecutive batches from the same text shard."""
    cuts = np.flatnonzero(np.diff(batch_shards)) + 1
    edges = np.concatenate([[0], cuts, [len(batch_shards)]]).astype(int)
    return [range(a, b) for a, b in zip(edges[:-1], edges[1:])]


def worker_rounds(run_lengths: list[int], workers: int) -> list[list[int]]:
    """Each worker's plan indices, the reorder buffer bounded by construction. The DataLoader takes one
    batch from each worker in turn; runs (a shard's batches) go to workers in plan order, `workers` per
    round, and within a round every worker yields as many items as the round's longest run, the shorter
    ones padded with -1. So the workers are level at the end of every round, and `in_plan_order` holds at
    most (workers - 1) runs' batches, whatever the number of shards (assigning shards by their id instead
    lets the backlog grow like a random walk, about sqrt(shards) shards)."""
    out = [[] for _ in range(workers)]
    starts = np.concatenate([[0], np.cumsum(run_lengths)]).astype(int)
    for r0 in range(0, len(run_lengths), workers):
        group = range(r0, min(r0 + workers, len(run_lengths)))
        longest = max(run_lengths[r] for r in group)
        for k, r in enumerate(group):
            out[k] += list(range(starts[r], starts[r + 1])) + [-1] * (longest - run_lengths[r])
    return out


class EpochBatches(IterableDataset):
    """The batches of one epoch, split across DataLoader workers, each tagged with its place in the plan.
    `workers` only sizes `len()`, which counts the padding items the DataLoader will also fetch."""

    def __init__(self, reader: SplitReader, plan: list[np.ndarray], workers: int = 1):
        self.reader, self.plan, self.workers = reader, plan, max(1, workers)

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.reader.iter_batches(self.plan, worker, workers, with_index=True)

    def __len__(self):
        return sum(len(self.reader.worker_indices(self.plan, w, self.workers)) for w in range(self.workers))


def in_plan_order(tagged, stats: dict | None = None):
    """(plan index, batch) pairs in any order -> the batches in plan order. Workers own whole shards, so the
    DataLoader's round robin over them interleaves shards; reordering here keeps an epoch's batch order, and
    so what a run learns, independent of train.num_workers. Holds at most the batches that arrive early:
    (workers - 1) shards' worth (`worker_rounds`). Index -1 is a worker's padding, dropped. `stats`, when
    given, receives the most batches held at once ("max_waiting")."""
    waiting, want = {}, 0
    if stats is not None:
        stats["max_waiting"] = 0
    for index, batch in tagged:
        if index < 0:
            continue
        waiting[index] = batch
        if stats is not None:
            stats["max_waiting"] = max(stats["max_waiting"], len(waiting) - (want in waiting))
        while want in waiting:
            yield waiting.pop(want)
            want += 1


def prefetch(iterable, depth: int = 2):
    """Produce the next `depth` items in a background thread, so file reads overlap the training step
    as far as the GIL allows when there are no worker processes (train.num_workers hides more of them:
    bench/RESULTS.md).

    The consumer may stop early (an exception in the training step, a `break`): closing or dropping its
    generator sets `stop`, and the producer, which waits on a full queue only a moment at a time, then
    stops too, closing its iterable (and so the shard files it holds) instead of blocking forever."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def offer(item) -> bool:
        """Put the item once there is room; False when the consumer has gone."""
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in iterable:
                if not offer(item):
                    break
            else:
                offer(done)
        except BaseException as e:   # re-raised in the consumer, with the shard's file named
            offer(e)
        finally:
            close = getattr(iterable, "close", None)
            if close is not None and stop.is_set():
                try:
                    close()
                except Exception:   # best effort: the consumer has gone, nobody is left to tell
                    pass

    thread = threading.Thread(target=work, daemon=True, name="prefetch")
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        # Wait for the read in progress (at most one batch, or one text shard and its images): a process that
        # exits while this thread is inside HDF5 can crash in HDF5's teardown.
        thread.join(timeout=30)


def epoch_loader(reader: SplitReader, batch_size: int, seed: int | None, num_workers: int = 0):
    """An iterable of batch dicts for one epoch (seed None: stored order). Streaming splits prefetch."""
    plan = reader.plan(batch_size, seed)
    if num_workers > 0:
        return in_plan_order(DataLoader(EpochBatches(reader, plan, num_workers), batch_size=None, num_workers=num_workers,
                                        prefetch_factor=2, persistent_workers=False))
    batches = reader.iter_batches(plan)
    return batches if reader.in_memory else prefetch(batches)
