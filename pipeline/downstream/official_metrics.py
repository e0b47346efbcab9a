"""The official GLUE and SQuAD metrics.

GLUE: CoLA Matthews correlation; accuracy; binary F1 with 1 as the positive class (MRPC, QQP);
STS-B Pearson and Spearman (ranks averaged over ties), from scipy. SQuAD: exact match and token F1 after
the official normalisation, maximised over the gold answers; v2.0 adds the HasAns / NoAns split. The
SQuAD part is written out here because the official script is a script, not a library.
SQuAD scores are percentages, as the official script prints them; GLUE scores are fractions.
"""
from __future__ import annotations

import collections
import re
import string

import numpy as np
from scipy import stats
from scipy.spatial.distance import dice


def accuracy(pred, gold) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    return float((pred == gold).mean())


def f1_binary(pred, gold) -> float:
    """F1 of the positive class, which is the Dice coefficient of the two labelings; 0 when neither
    holds a positive (sklearn's convention)."""
    pred, gold = np.asarray(pred) == 1, np.asarray(gold) == 1
    if not (pred.any() or gold.any()):
        return 0.0
    return float(1 - dice(pred, gold))


def matthews(pred, gold) -> float:
    """Matthews correlation: the Pearson correlation of the two 0/1 labelings (the phi coefficient)."""
    return pearson(np.asarray(pred) == 1, np.asarray(gold) == 1)


def _undefined(x: np.ndarray, y: np.ndarray) -> bool:
    # A constant side (a head that predicts one class or one score) has no correlation to measure:
    # scipy warns and gives NaN, GLUE's convention (and a mean over seeds) wants 0.
    return len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0


def pearson(x, y) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return 0.0 if _undefined(x, y) else float(stats.pearsonr(x, y).statistic)


def spearman(x, y) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return 0.0 if _undefined(x, y) else float(stats.spearmanr(x, y).statistic)


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
