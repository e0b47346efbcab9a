"""The official GLUE and SQuAD metrics, in numpy only (no scipy or sklearn at run time).

GLUE: CoLA Matthews correlation; accuracy; binary F1 with 1 as the positive class (MRPC, QQP);
STS-B Pearson and Spearman (ranks averaged over ties). SQuAD: exact match and token F1 after the
official normalisation, maximised over the gold answers; v2.0 adds the HasAns / NoAns split.
SQuAD scores are percentages, as the official script prints them; GLUE scores are fractions.
"""
from __future__ import annotations

import collections
import re
import string

import numpy as np


def accuracy(pred, gold) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    return float((pred == gold).mean())


def f1_binary(pred, gold) -> float:
    pred, gold = np.asarray(pred) == 1, np.asarray(gold) == 1
    tp = float((pred & gold).sum())
    denom = float(pred.sum() + gold.sum())
    return 2 * tp / denom if denom else 0.0


def matthews(pred, gold) -> float:
    """Matthews correlation of two binary labelings; 0 when a row or column of the table is empty."""
    pred, gold = np.asarray(pred) == 1, np.asarray(gold) == 1
    tp, tn = float((pred & gold).sum()), float((~pred & ~gold).sum())
    fp, fn = float((pred & ~gold).sum()), float((~pred & gold).sum())
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denom) if denom else 0.0


def pearson(x, y) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom else 0.0


def _ranks(x) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks (as scipy.stats.rankdata)."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x, y) -> float:
    return pearson(_ranks(x), _ranks(y))


GLUE_METRICS = {"accuracy": accuracy, "f1": f1_binary, "matthews": matthews,
                "pearson": pearson, "spearman": spearman}


def glue_scores(names, pred, gold) -> dict[str, float]:
    return {n: GLUE_METRICS[n](pred, gold) for n in names}


# ----------------------------------------------------------------------------- SQuAD

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace (official order)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(pred: str, gold: str) -> float:
    return float(normalize_answer(pred) == normalize_answer(gold))


def token_f1(pred: str, gold: str, version: str = "2.0") -> float:
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    if version == "2.0" and (not p or not g):  # v2.0: an empty answer is right only against an empty gold
        return float(p == g)
    # v1.1's script has no such case: no shared token, an empty side included, scores 0.
    common = sum((collections.Counter(p) & collections.Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def squad_scores(questions, predictions: dict[str, str], version: str) -> dict[str, float]:
    """EM and F1 (percent) over all questions; for v2.0 also HasAns_* and NoAns_* and their counts.

    A question without a prediction counts as wrong, as in the official script's strict mode. Each
    version follows its own official script: v2.0 drops gold answers that normalise to nothing (an
    unanswerable question's gold is then ""), v1.1 keeps every gold answer as it is."""
    em, f1, has = [], [], []
    for q in questions:
        if version == "2.0":
            golds = [a.text for a in q.answers if normalize_answer(a.text)] or [""]
        else:
            golds = [a.text for a in q.answers]
        pred = predictions.get(q.qid)
        if pred is None or not golds:
            em.append(0.0), f1.append(0.0)
        else:
            em.append(max(exact_match(pred, g) for g in golds))
            f1.append(max(token_f1(pred, g, version) for g in golds))
        has.append(bool(q.answers) and not q.is_impossible)
    em, f1, has = np.array(em), np.array(f1), np.array(has)
    out = {"exact": 100 * em.mean(), "f1": 100 * f1.mean(), "total": float(len(em))}
    if version == "2.0":
        for name, sel in (("HasAns", has), ("NoAns", ~has)):
            if sel.any():
                out[f"{name}_exact"] = 100 * em[sel].mean()
                out[f"{name}_f1"] = 100 * f1[sel].mean()
            out[f"{name}_total"] = float(sel.sum())
    return {k: float(v) for k, v in out.items()}
