"""From per-window start/end logits to one answer string per question (the standard BERT recipe).

For each window the `n_best` highest start and end logits are paired; a pair is a candidate when
both tokens lie in the context, start <= end, and the span is at most `max_answer_length` tokens.
A candidate scores start + end logit; the best over all windows of a question wins. For SQuAD v2.0
the no-answer score is the [CLS] pair (start[0] + end[0]), taken as the minimum over the question's
windows (the window most sure there *is* an answer decides); the answer is empty when the null score
exceeds the best span's score by more than `null_threshold`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.downstream.squad import SquadQuestion, Window


@dataclass
class Prediction:
    text: str
    score: float            # best span's start + end logit (-inf when no valid span exists)
    null_score: float       # the question's no-answer score (min over windows of start[0] + end[0])


def window_candidates(window: Window, start: np.ndarray, end: np.ndarray, n_best: int,
                      max_answer_length: int) -> list[tuple[float, int, int]]:
    """(score, start token, end token) of every valid span among the top n_best starts and ends."""
    context = window.offsets[:, 0] >= 0
    starts = np.argsort(-start, kind="stable")[:n_best]
    ends = np.argsort(-end, kind="stable")[:n_best]
    out = []
    for s in starts:
        for e in ends:
            if not (context[s] and context[e]) or e < s or e - s + 1 > max_answer_length:
                continue
            out.append((float(start[s] + end[e]), int(s), int(e)))
    return out


def predict_answers(questions: list[SquadQuestion], windows: list[Window], start_logits: list[np.ndarray],
                    end_logits: list[np.ndarray], *, version: str, n_best: int = 20,
                    max_answer_length: int = 30, null_threshold: float = 0.0) -> dict[str, Prediction]:
    """One `Prediction` per question id. `start_logits[k]` / `end_logits[k]` belong to `windows[k]`."""
    by_q: dict[str, list[int]] = {}
    for k, w in enumerate(windows):
        by_q.setdefault(w.qid, []).append(k)
    out = {}
    for q in questions:
        best, null = (-np.inf, None, 0, 0), np.inf
        for k in by_q.get(q.qid, []):
            s, e = np.asarray(start_logits[k], np.float64), np.asarray(end_logits[k], np.float64)
            null = min(null, float(s[0] + e[0]))
            for score, ts, te in window_candidates(windows[k], s, e, n_best, max_answer_length):
                if score > best[0]:
                    best = (score, k, ts, te)
        score, k, ts, te = best
        text = ""
        if k is not None:
            offs = windows[k].offsets
            text = q.context[offs[ts, 0]:offs[te, 1]]
        if version == "2.0" and (k is None or null - score > null_threshold):
            text = ""
        out[q.qid] = Prediction(text, float(score), float(null))
    return out
