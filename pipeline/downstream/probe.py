"""Probe mode: the text encoder frozen, its states read from the cache, only a head (and optionally
f_g) trained. The grounded head reads `[h; f_g(h)]`, the baseline the same head on `h` alone.

With f_g frozen the features never change, so they are computed once per run (pooled vectors for
GLUE, per-token features for SQuAD) and every epoch and seed trains only the head on them.

A task split larger than `downstream.memory_budget_gb` streams (`ShardedBank`): one cache shard at a
time in memory, epochs visiting the shards in a random order and each shard's items shuffled. A split in
memory follows the same shards, so it trains on the same batches and scores the same; the per-token
SQuAD features of a streamed split are recomputed per shard as it is read, never held whole.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.cache.format import dataset_layout, decode_ids, open_manifest, read_shard, shard_files
from pipeline.downstream.head_training import batches, shuffled_batches, threads, train_head
from pipeline.downstream.glue import TaskSpec
from pipeline.downstream.heads import PooledHead, SpanHead
from pipeline.downstream.official_metrics import glue_scores, squad_scores
from pipeline.downstream.squad_postprocess import predict_answers
from pipeline.errors import CacheError
from pipeline.grounded.vectors import TokenFeatures, pool
from pipeline.runtime import seed_everything

# Batch sizes of passes that only compute (no training step): they bound memory and never change a number.
POOLED_BATCH = 4096     # items whose frozen pooled features are computed once, before the head trains
PREDICT_BATCH = 1024    # items per prediction pass over an evaluation set
SPAN_BATCH = 64         # SQuAD windows per pass: each is padded to its full length, so fewer than pooled items
# Token rows per call of a mapped bank's function (f_g): bounds its hidden activations; both banks use it, so
# in-memory and streamed banks group the rows alike.
MAP_CHUNK = 65536


class TokenBank:
    """Variable-length token states, back to back (T, d) with offsets, as the cache stores them.

    `item_shard`, when the bank comes from a cache, names each item's cache shard: training batches and
    the passes over every item then follow the shards (`shard_plan`, `ordered_batches`), in memory as
    streamed, so a split gives the same batches, hence the same scores, whether it fits the budget or not.
    Without it (or with one shard) the bank is one shard, and an epoch is one shuffle of all items."""

    def __init__(self, states: list[np.ndarray] | torch.Tensor, offsets: np.ndarray | None = None,
                 item_shard: np.ndarray | None = None):
        if offsets is None:
            offsets = np.concatenate([[0], np.cumsum([len(s) for s in states])]).astype(np.int64)
            states = torch.from_numpy(np.concatenate(states))
        self.flat, self.offsets, self.item_shard = states, offsets, item_shard

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def dim(self) -> int:
        return int(self.flat.shape[1])

    def lengths(self, idx) -> np.ndarray:
        return self.offsets[np.asarray(idx) + 1] - self.offsets[np.asarray(idx)]

    def epoch_batches(self, rng: np.random.Generator, batch_size: int) -> list[np.ndarray]:
        return shard_plan(self.item_shard, len(self), rng, batch_size)

    def ordered_batches(self, size: int):
        """Every item once, in batches that never span two shards: for passes that compute per item."""
        return ordered_batches(self.item_shard, len(self), size)

    def gather(self, idx) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows of the items `idx` (float32), the batch position of each row, the row of each item's [CLS]."""
        idx = np.asarray(idx)
        lengths, starts = self.lengths(idx), self.offsets[idx]
        first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        rows = np.repeat(starts - first, lengths) + np.arange(lengths.sum())
        segments = np.repeat(np.arange(len(idx)), lengths)
        return self.flat[torch.from_numpy(rows)].float(), torch.from_numpy(segments), torch.from_numpy(first)

    def padded(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        rows, segments, first = self.gather(idx)
        lengths = self.lengths(idx)
        out = rows.new_zeros(len(idx), int(lengths.max()), rows.shape[1])
        pos = torch.arange(len(rows)) - first[segments]
        out[segments, pos] = rows
        mask = torch.arange(out.shape[1])[None, :] < torch.from_numpy(lengths)[:, None]
        return out, mask

    def mapped(self, fn) -> "TokenBank":
        """A bank of fn(rows), computed once in chunks of rows (no gradients), shard by shard as a
        streamed bank computes it, so both give the same values."""
        with torch.no_grad():
            if self.item_shard is None:
                flat = torch.cat([fn(self.flat[s:s + MAP_CHUNK].float()) for s in range(0, len(self.flat), MAP_CHUNK)])
                return TokenBank(flat, self.offsets)
            flat = None
            for idx in self.ordered_batches(len(self)):   # all of one shard's items, in bank order
                rows = self.gather(idx)[0]
                out = torch.cat([fn(rows[k:k + MAP_CHUNK]) for k in range(0, len(rows), MAP_CHUNK)])
                if flat is None:
                    flat = torch.empty(len(self.flat), out.shape[1], dtype=out.dtype)
                flat[torch.from_numpy(_rows_of(self.offsets, idx))] = out
        return TokenBank(flat, self.offsets, self.item_shard)


class ShardedBank(TokenBank):
    """A bank whose states stay in the cache's shards; one shard at a time is in memory (its items' rows in
    bank order, mapped by `fn` when the bank is a `mapped` one). Training and every pass over the items
    follow the shards, so each shard is read once per epoch."""

    def __init__(self, files: list[Path], item_ids: list[str], fn=None):
        where = {}
        offsets_of, self.files, self.fn, self._current = [], list(files), fn, (None, None)
        for s, path in enumerate(self.files):
            meta = read_shard(path, ("offsets", "caption_ids"))
            offsets_of.append(meta["offsets"])
            where.update((cid, (s, j)) for j, cid in enumerate(decode_ids(meta["caption_ids"])))
        missing = [i for i in item_ids if i not in where]
        if missing:
            raise CacheError(f"file {self.files[0].parent.parent}: {len(missing)} task items are not in the cache, "
                             f"e.g. {missing[0]!r}")
        self.item_shard = np.array([where[i][0] for i in item_ids], dtype=np.int64)
        self.item_local = np.array([where[i][1] for i in item_ids], dtype=np.int64)
        lengths = np.array([offsets_of[s][j + 1] - offsets_of[s][j] for s, j in (where[i] for i in item_ids)],
                           dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)   # bank order, for lengths()
        self._shard_offsets = offsets_of
        shape, dtype = dataset_layout(self.files[0], "states")
        self._dim = int(shape[1])
        # The stored dtype: held in memory as stored, so a float32 cache is not rounded to float16 there
        # while the streamed path reads it whole (both then compute in float32).
        self.stored_dtype = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
        self.flat = None

    @property
    def dim(self) -> int:
        if self.fn is None:
            return self._dim
        return int(self._load(int(self.item_shard[0]))[0].shape[1])

    def _load(self, s: int) -> tuple[torch.Tensor, np.ndarray]:
        """Shard s: its items' rows in bank order (mapped) and, per bank item, where its rows start there."""
        if self._current[0] == s:
            return self._current[1]
        members = np.flatnonzero(self.item_shard == s)
        data = read_shard(self.files[s], ("states",))["states"]
        off = self._shard_offsets[s]
        local = self.item_local[members]
        lengths = off[local + 1] - off[local]
        src = np.repeat(off[local], lengths) + (np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths))
        rows = torch.from_numpy(data[src]).float()
        if self.fn is not None:
            with torch.no_grad():
                rows = torch.cat([self.fn(rows[k:k + MAP_CHUNK]) for k in range(0, len(rows), MAP_CHUNK)])
        start = np.zeros(len(self), dtype=np.int64)
        start[members] = np.cumsum(lengths) - lengths
        self._current = (s, (rows, start))
        return rows, start

    def gather(self, idx) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = np.asarray(idx)
        shards = np.unique(self.item_shard[idx])
        if len(shards) != 1:
            raise ValueError("a streamed bank reads one shard per batch (use epoch_batches / ordered_batches)")
        rows, start = self._load(int(shards[0]))
        lengths = self.lengths(idx)
        first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        src = np.repeat(start[idx] - first, lengths) + np.arange(lengths.sum())
        segments = np.repeat(np.arange(len(idx)), lengths)
        return rows[torch.from_numpy(src)], torch.from_numpy(segments), torch.from_numpy(first)

    def mapped(self, fn) -> "ShardedBank":
        """fn applied to each shard as it is read (every epoch), never to the whole split at once."""
        out = copy.copy(self)
        out.fn, out._current = fn, (None, None)
        return out


def _rows_of(offsets: np.ndarray, idx: np.ndarray) -> np.ndarray:
    lengths = offsets[idx + 1] - offsets[idx]
    return np.repeat(offsets[idx], lengths) + (np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths))


def shard_plan(item_shard: np.ndarray | None, n: int, rng: np.random.Generator, batch_size: int) -> list[np.ndarray]:
    """An epoch's batches: shards in a random order, items shuffled within each, a batch never spanning two
    shards. One shard (or none known): one shuffle of all items."""
    if item_shard is None or len(np.unique(item_shard)) <= 1:
        return shuffled_batches(n, batch_size, rng)
    out = []
    for s in rng.permutation(np.unique(item_shard)):
        idx = rng.permutation(np.flatnonzero(item_shard == s))
        out += [idx[k:k + batch_size] for k in range(0, len(idx), batch_size)]
    return out


def ordered_batches(item_shard: np.ndarray | None, n: int, size: int):
    if item_shard is None:
        yield from batches(n, size)
        return
    for s in np.unique(item_shard):
        idx = np.flatnonzero(item_shard == s)
        for k in range(0, len(idx), size):
            yield idx[k:k + size]


def open_bank(folder: Path, item_ids: list[str], memory_budget_gb: float) -> TokenBank:
    """The states of `item_ids` (in that order) from a text cache: in memory when its shards fit the budget,
    else streamed shard by shard. Both follow the shards, so they give the same batches."""
    folder = Path(folder)
    files = shard_files(folder, open_manifest(folder), "text")
    streamed = ShardedBank(files, item_ids)
    if sum(f.stat().st_size for f in files) > memory_budget_gb * 2**30:
        return streamed
    flat = torch.empty(int(streamed.offsets[-1]), streamed.dim, dtype=streamed.stored_dtype)
    for s in range(len(files)):                # shard by shard into one tensor: never twice the split
        members = np.flatnonzero(streamed.item_shard == s)
        if len(members):
            rows, start = streamed._load(s)
            flat[torch.from_numpy(_rows_of(streamed.offsets, members))] = rows.to(flat.dtype)
    streamed._current = (None, None)
    return TokenBank(flat, streamed.offsets, streamed.item_shard)


def build_bank(items, encoder, folder: Path, *, source: dict, cfg: dict) -> TokenBank:
    """features.cached_states for the probe: extract what is not cached yet into `folder`, then open the
    states in or out of memory by `downstream.memory_budget_gb`."""
    from pipeline.extraction import build_text_cache

    build = dict(source=source, shard_size=cfg["shard_size"], batch_size=cfg["extract_batch_size"],
                 storage_dtype=cfg["storage_dtype"], progress=False)
    try:
        build_text_cache(items, encoder, folder, **build)
    except CacheError:   # as cached_states: the folder's name pins inputs and encoder, so rebuild derived data
        build_text_cache(items, encoder, folder, overwrite=True, **build)
    return open_bank(folder, [it.item_id for it in items], cfg["memory_budget_gb"])


def in_bank_order(bank: TokenBank, size: int, compute) -> torch.Tensor:
    """compute(idx) over every item, shard by shard, stacked back in bank order."""
    out = None
    for idx in bank.ordered_batches(size):
        part = compute(idx)
        if out is None:
            out = part.new_empty((len(bank),) + tuple(part.shape[1:]))
        out[torch.from_numpy(idx)] = part
    return out


def _features(dim: int, grounding: nn.Module | None, tune: bool) -> TokenFeatures:
    # A fresh copy per seed: a tuned f_g must not carry one seed's updates into the next.
    return TokenFeatures(dim, copy.deepcopy(grounding) if grounding is not None else None, tune)


@threads(1)
def probe_glue(spec: TaskSpec, train: tuple[TokenBank, np.ndarray], evals: dict[str, tuple[TokenBank, np.ndarray]],
               grounding: nn.Module | None, *, cfg: dict, seed: int) -> dict[str, float]:
    """Train one head (one seed) and return `{"<eval set>/<metric>": value}`."""
    seed_everything(seed)
    bank, y = train
    feats = _features(bank.dim, grounding, cfg["tune_fg"])
    head = PooledHead(feats.dim, spec.num_outputs, cfg["probe_head_hidden"], cfg["dropout"])
    pooling = cfg["pooling"]

    def encode(b: TokenBank, idx) -> torch.Tensor:
        rows, segments, first = b.gather(idx)
        return pool(feats(rows), segments, first, len(idx), pooling)

    if feats.tune:
        train_x = lambda idx: encode(bank, idx)  # noqa: E731
    else:
        with torch.no_grad():
            fixed = in_bank_order(bank, POOLED_BATCH, lambda i: encode(bank, i))
        train_x = lambda idx: fixed[torch.from_numpy(np.asarray(idx))]  # noqa: E731
    target = torch.as_tensor(y)
    train_head([{"params": list(head.parameters()), "lr": cfg["probe_lr"]},
                {"params": list(feats.parameters()), "lr": cfg["fg_lr"]}], len(bank),
               lambda idx: head.loss(head(train_x(idx)), target[torch.from_numpy(idx)]),
               epochs=cfg["probe_epochs"], batch_size=cfg["probe_batch_size"], seed=seed,
               weight_decay=cfg["weight_decay"], warmup_fraction=cfg["warmup_fraction"], modules=(head, feats),
               epoch_plan=lambda rng: bank.epoch_batches(rng, cfg["probe_batch_size"]))
    scores = {}
    with torch.no_grad():
        for name, (b, gold) in evals.items():
            pred = in_bank_order(b, PREDICT_BATCH, lambda i: head.predict(head(encode(b, i)))).numpy()
            scores.update({f"{name}/{k}": v for k, v in glue_scores(spec.metrics, pred, gold).items()})
    return scores


def span_logits(head: SpanHead, bank: TokenBank, transform, batch: int = SPAN_BATCH) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Start and end logits of every window, trimmed to its length."""
    starts, ends = [None] * len(bank), [None] * len(bank)
    with torch.no_grad():
        for idx in bank.ordered_batches(batch):
            x, mask = bank.padded(idx)
            s, e = head(transform(x), mask)
            for row, (k, n) in enumerate(zip(idx, bank.lengths(idx))):
                starts[k], ends[k] = s[row, :n].numpy(), e[row, :n].numpy()
    return starts, ends


@threads(1)
def probe_squad(train: tuple[TokenBank, np.ndarray, np.ndarray], dev: tuple[TokenBank, list, list],
                grounding: nn.Module | None, *, version: str, cfg: dict, seed: int) -> dict[str, float]:
    """Train one start/end head (one seed). `train` = (bank, start labels, end labels) per window;
    `dev` = (bank, its windows, the questions). Returns the SQuAD scores of the dev set."""
    seed_everything(seed)
    bank, start_gold, end_gold = train
    dev_bank, windows, questions = dev
    feats = _features(bank.dim, grounding, cfg["tune_fg"])
    head = SpanHead(feats.dim, cfg["probe_head_hidden"], cfg["dropout"])
    if not feats.tune:  # per-token features once; the head then trains on them directly
        bank, dev_bank, transform = bank.mapped(feats), dev_bank.mapped(feats), (lambda x: x)
    else:
        transform = feats
    s_gold, e_gold = torch.as_tensor(start_gold), torch.as_tensor(end_gold)

    def step(idx):
        x, mask = bank.padded(idx)
        s, e = head(transform(x), mask)
        i = torch.from_numpy(idx)
        return head.loss(s, e, s_gold[i], e_gold[i])

    train_head([{"params": list(head.parameters()), "lr": cfg["probe_lr"]},
                {"params": list(feats.parameters()), "lr": cfg["fg_lr"]}], len(bank), step,
               epochs=cfg["probe_epochs"], batch_size=cfg["probe_batch_size"], seed=seed,
               weight_decay=cfg["weight_decay"], warmup_fraction=cfg["warmup_fraction"], modules=(head, feats),
               epoch_plan=lambda rng: bank.epoch_batches(rng, cfg["probe_batch_size"]))
    starts, ends = span_logits(head, dev_bank, transform)
    preds = predict_answers(questions, windows, starts, ends, version=version, n_best=cfg["n_best"],
                            max_answer_length=cfg["max_answer_length"], null_threshold=cfg["null_threshold"])
    return squad_scores(questions, {k: p.text for k, p in preds.items()}, version)
