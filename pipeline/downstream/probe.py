"""Probe mode: the text encoder frozen, its states read from the cache, only a head (and optionally
f_g) trained. The grounded head reads `[h; f_g(h)]`, the baseline the same head on `h` alone.

With f_g frozen the features never change, so they are computed once per run (pooled vectors for
GLUE, per-token features for SQuAD) and every epoch and seed trains only the head on them.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from pipeline.downstream.engine import batches, fit, threads
from pipeline.downstream.glue import TaskSpec
from pipeline.downstream.heads import PooledHead, SpanHead, TokenFeatures, pool
from pipeline.downstream.metrics import glue_scores, squad_scores
from pipeline.downstream.squad_postprocess import predict_answers
from pipeline.runtime import seed_everything


class TokenBank:
    """Variable-length token states, back to back (T, d) with offsets, as the cache stores them."""

    def __init__(self, states: list[np.ndarray] | torch.Tensor, offsets: np.ndarray | None = None):
        if offsets is None:
            offsets = np.concatenate([[0], np.cumsum([len(s) for s in states])]).astype(np.int64)
            states = torch.from_numpy(np.concatenate(states))
        self.flat, self.offsets = states, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self, idx) -> np.ndarray:
        return self.offsets[np.asarray(idx) + 1] - self.offsets[np.asarray(idx)]

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

    def mapped(self, fn, chunk: int = 65536) -> "TokenBank":
        """A bank of fn(rows), computed once in chunks of rows (no gradients)."""
        with torch.no_grad():
            flat = torch.cat([fn(self.flat[s:s + chunk].float()) for s in range(0, len(self.flat), chunk)])
        return TokenBank(flat, self.offsets)


def _features(dim: int, grounding: nn.Module | None, tune: bool) -> TokenFeatures:
    # A fresh copy per seed: a tuned f_g must not carry one seed's updates into the next.
    return TokenFeatures(dim, copy.deepcopy(grounding) if grounding is not None else None, tune)


@threads(1)
def probe_glue(spec: TaskSpec, train: tuple[TokenBank, np.ndarray], evals: dict[str, tuple[TokenBank, np.ndarray]],
               grounding: nn.Module | None, *, cfg: dict, seed: int) -> dict[str, float]:
    """Train one head (one seed) and return `{"<eval set>/<metric>": value}`."""
    seed_everything(seed)
    bank, y = train
    feats = _features(bank.flat.shape[1], grounding, cfg["tune_fg"])
    head = PooledHead(feats.dim, spec.num_outputs, cfg["probe_head_hidden"], cfg["dropout"])
    pooling = cfg["pooling"]

    def encode(b: TokenBank, idx) -> torch.Tensor:
        rows, segments, first = b.gather(idx)
        return pool(feats(rows), segments, first, len(idx), pooling)

    if feats.tune:
        train_x = lambda idx: encode(bank, idx)  # noqa: E731
    else:
        with torch.no_grad():
            fixed = torch.cat([encode(bank, i) for i in batches(len(bank), 4096)])
        train_x = lambda idx: fixed[torch.from_numpy(np.asarray(idx))]  # noqa: E731
    target = torch.as_tensor(y)
    fit([{"params": list(head.parameters()), "lr": cfg["probe_lr"]},
         {"params": list(feats.parameters()), "lr": cfg["fg_lr"]}], len(bank),
        lambda idx: head.loss(head(train_x(idx)), target[torch.from_numpy(idx)]),
        epochs=cfg["probe_epochs"], batch_size=cfg["probe_batch_size"], seed=seed,
        weight_decay=cfg["weight_decay"], warmup_fraction=cfg["warmup_fraction"], modules=(head, feats))
    scores = {}
    with torch.no_grad():
        for name, (b, gold) in evals.items():
            pred = torch.cat([head.predict(head(encode(b, i))) for i in batches(len(b), 1024)]).numpy()
            scores.update({f"{name}/{k}": v for k, v in glue_scores(spec.metrics, pred, gold).items()})
    return scores


def span_logits(head: SpanHead, bank: TokenBank, transform, batch: int = 64) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Start and end logits of every window, trimmed to its length."""
    starts, ends = [], []
    with torch.no_grad():
        for idx in batches(len(bank), batch):
            x, mask = bank.padded(idx)
            s, e = head(transform(x), mask)
            for row, n in enumerate(bank.lengths(idx)):
                starts.append(s[row, :n].numpy())
                ends.append(e[row, :n].numpy())
    return starts, ends


@threads(1)
def probe_squad(train: tuple[TokenBank, np.ndarray, np.ndarray], dev: tuple[TokenBank, list, list],
                grounding: nn.Module | None, *, version: str, cfg: dict, seed: int) -> dict[str, float]:
    """Train one start/end head (one seed). `train` = (bank, start labels, end labels) per window;
    `dev` = (bank, its windows, the questions). Returns the SQuAD scores of the dev set."""
    seed_everything(seed)
    bank, start_gold, end_gold = train
    dev_bank, windows, questions = dev
    feats = _features(bank.flat.shape[1], grounding, cfg["tune_fg"])
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

    fit([{"params": list(head.parameters()), "lr": cfg["probe_lr"]},
         {"params": list(feats.parameters()), "lr": cfg["fg_lr"]}], len(bank), step,
        epochs=cfg["probe_epochs"], batch_size=cfg["probe_batch_size"], seed=seed,
        weight_decay=cfg["weight_decay"], warmup_fraction=cfg["warmup_fraction"], modules=(head, feats))
    starts, ends = span_logits(head, dev_bank, transform)
    preds = predict_answers(questions, windows, starts, ends, version=version, n_best=cfg["n_best"],
                            max_answer_length=cfg["max_answer_length"], null_threshold=cfg["null_threshold"])
    return squad_scores(questions, {k: p.text for k, p in preds.items()}, version)
