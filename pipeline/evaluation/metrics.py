"""Metric arithmetic on plain arrays, independent of the model (tested on constructed matrices).

Ties are resolved against the model everywhere: a wrong candidate scoring exactly as high as the right
one ranks above it. A model that scores every pair alike therefore gets R@1 = 0, not a lucky 1.
"""
from __future__ import annotations

import math

import numpy as np

from pipeline.errors import DataError


def matching_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of pairs on the right side of the logit 0 (probability 0.5)."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels).astype(bool)
    return float(((logits > 0) == labels).mean())


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x ascending, tied values sharing the mean of the ranks they span."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # Start of each run of equal values, and its length.
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    lengths = np.diff(np.r_[starts, len(xs)])
    mean_rank = starts + (lengths + 1) / 2.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, lengths)
    return ranks


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Exact ROC-AUC by the Mann-Whitney statistic: the probability that a random positive outscores a
    random negative, ties counting one half. No thresholds, no interpolation."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC-AUC needs at least one positive and one negative")
    ranks = average_ranks(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def recall_from_ranks(ranks: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    """ranks: 0-based rank of the best correct candidate of each query -> {"R@k": fraction with rank < k}."""
    ranks = np.asarray(ranks)
    return {f"R@{k}": float((ranks < k).mean()) for k in ks}


def chance_recall(candidates: int, correct: int, k: int) -> float:
    """Probability that a uniformly random ranking of `candidates` puts one of `correct` in the top k."""
    if k >= candidates:
        return 1.0
    return 1.0 - math.comb(candidates - correct, k) / math.comb(candidates, k)


def check_finite_scores(scores: np.ndarray, where: str = "the score matrix", source: str | None = None,
                        first_row: int = 0) -> None:
    """Raise if any caption-image score is NaN or infinite. Every comparison with NaN is False, so a NaN
    gold score would rank first (a hit at R@1) and a NaN image would drop out of image->text unnoticed:
    no metric is computed from such scores. `where` names the block (captions x images), `source` the
    checkpoint that produced it, `first_row` the block's first caption, so the message points at an entry."""
    scores = np.asarray(scores)
    bad = ~np.isfinite(scores)
    if not bad.any():
        return
    first = np.argwhere(bad)[0]
    at = (f"caption {first_row + int(first[0])}, image {int(first[1])}" if scores.ndim == 2
          else f"entry {first_row + int(first[0])}")
    producer = "the run's checkpoint" if source is not None else "the model"
    raise DataError(f"{int(bad.sum())} of {scores.size} scores are not finite (the first, at {at}, is "
                    f"{scores[tuple(first)]}): {producer} produced NaN or inf scores, so no rank or recall can be "
                    f"computed from them. Check the checkpoint (a run that diverged) and the cache's features "
                    f"(`groundedbert cache verify`).", file=None if source is None else str(source), item=where)


def text_to_image_ranks(scores: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """scores (C, N), gold (C,) the column of each caption's image -> 0-based rank of the gold image,
    counting every other image that scores at least as high. Non-finite scores raise DataError."""
    scores = np.asarray(scores)
    check_finite_scores(scores)
    gold_scores = scores[np.arange(len(gold)), gold]
    ahead = (scores >= gold_scores[:, None]).sum(1) - 1
    return ahead


def best_own_scores(gold_scores: np.ndarray, gold: np.ndarray, n_images: int) -> np.ndarray:
    """(N,) the highest score any of an image's own captions gets with it (-inf for an image without
    captions). gold_scores (C,) is each caption's score with its own image."""
    best = np.full(n_images, -np.inf)
    np.maximum.at(best, gold, gold_scores)
    return best


def image_to_text_ahead(scores: np.ndarray, gold: np.ndarray, best_own: np.ndarray) -> np.ndarray:
    """For a block of captions, scores (c, N) and their images gold (c,): how many of them are someone
    else's caption scoring at least as high as each image's best own caption. Summed over blocks, this
    is each image's 0-based image->text rank, so all C x N scores never need to be held at once.
    Non-finite scores raise DataError (best_own is -inf, legitimately, for an image without captions)."""
    scores = np.asarray(scores)
    check_finite_scores(scores)
    own = np.zeros_like(scores, dtype=bool)
    own[np.arange(len(gold)), gold] = True
    return ((scores >= best_own[None, :]) & ~own).sum(0)


def image_to_text_ranks(scores: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """scores (C, N), gold (C,) -> for each image that has captions, the 0-based rank of its best own
    caption among all C captions (its other captions do not count against it). Non-finite scores raise
    DataError: a NaN gold score would otherwise leave its image out of the ranks without a word."""
    scores = np.asarray(scores)
    check_finite_scores(scores)
    best = best_own_scores(scores[np.arange(len(gold)), gold], gold, scores.shape[1])
    return image_to_text_ahead(scores, gold, best)[np.isfinite(best)]


def retrieval(t2i_ranks: np.ndarray, i2t_ranks: np.ndarray, gold: np.ndarray, n_images: int,
              ks=(1, 5, 10)) -> dict:
    """Recall@k both ways, with the number of candidates and the chance level beside each.

    t2i_ranks (C,) and i2t_ranks (one per image with captions) as the functions above compute them;
    gold (C,) gives each caption's image, for the chance level of image->text (an image with c captions
    among C has chance 1 - comb(C-c, k)/comb(C, k) of a hit in the top k)."""
    n_captions = len(gold)
    t2i = recall_from_ranks(t2i_ranks, ks)
    t2i.update(candidates=n_images, **{f"chance@{k}": chance_recall(n_images, 1, k) for k in ks})
    i2t = recall_from_ranks(i2t_ranks, ks)
    per_image = np.bincount(gold, minlength=n_images)
    per_image = per_image[per_image > 0]
    i2t.update(candidates=n_captions, **{f"chance@{k}": float(np.mean([chance_recall(n_captions, int(c), k)
                                                                          for c in per_image])) for k in ks})
    return {"t2i": t2i, "i2t": i2t}
