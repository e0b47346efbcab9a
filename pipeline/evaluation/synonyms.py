"""Synonym precision: a text-only view of grounding, with no image at test time.

If grounding works, words that name the same thing in the image ("red", "crimson", "scarlet") should
end up close in g = f_g(h) even when BERT's h keeps them apart, and words that name different things
("red", "blue") should not. Each colour or shape word TYPE (its lower-cased surface form) gets one
vector per space: the mean, over its occurrences in the test captions, of the mean of the vectors of
the content tokens that overlap the word's character span. Precision@1 asks, for every type, whether
the nearest other type by cosine is a synonym (same kind and same canonical class). A type whose class
has no other type present cannot hit, so it is no trial. Comparing spaces ("h", "g", a random
projection) on the same occurrences shows what training added.

Held-out words. The synthetic data marks some surface forms "held_out": true, forms that never appear in
a training caption. The model cannot have learnt them from the images; only the text encoder's h
relates them to their class, so precision@1 restricted to held-out types (each held-out type present: is
its nearest other type, among all types, a synonym?) asks whether f_g carries that relation over.

Ties are resolved against the space, as everywhere in evaluation (metrics.py): a non-synonym exactly as
close as the best synonym is taken as the nearest. Means and cosines are float64.
"""
from __future__ import annotations

import numpy as np

from pipeline.evaluation.pointing import grounded_tokens

KINDS = ("colour", "shape")   # word kinds with synonyms in the synthetic data; "size" words are left out


def word_type(text: str) -> str:
    """The type of a surface form: lower-cased, whitespace collapsed ("Five-pointed  star" -> "five-pointed star")."""
    return " ".join(str(text).lower().split())


def word_occurrences(char_spans: np.ndarray, content_mask: np.ndarray,
                     phrases: list[dict]) -> list[tuple[str, str, str, np.ndarray]]:
    """Colour and shape words of one caption -> [(type, kind, class, token positions)].

    char_spans (n, 2) of the caption's tokens (padding rows (0, 0)), content_mask (n,) bool, phrases as in
    the grounding file, each with "words" [{"start", "end", "text", "kind", "class"}] (character offsets,
    end exclusive). The token positions are the content tokens whose span overlaps the word's; a word
    with none (cut by truncation, say) is skipped."""
    spans = np.asarray(char_spans)
    content = np.asarray(content_mask).astype(bool)
    out = []
    for phrase in phrases:
        for word in phrase.get("words", ()):
            if word["kind"] not in KINDS:
                continue
            tokens = grounded_tokens(spans, content, int(word["start"]), int(word["end"]))
            if len(tokens):
                out.append((word_type(word["text"]), str(word["kind"]), str(word["class"]), tokens))
    return out


def held_out_types(phrases: list[dict]) -> set[str]:
    """Types of the colour and shape words of one caption marked "held_out": true."""
    return {word_type(w["text"]) for p in phrases for w in p.get("words", ())
            if w.get("held_out") and w.get("kind") in KINDS}


class WordTypeAverager:
    """Per-type sums of occurrence vectors, for several named vector spaces at once."""

    def __init__(self):
        self.labels: dict[str, tuple[str, str]] = {}          # type -> (kind, class), shared by all spaces
        self.sums: dict[str, dict[str, np.ndarray]] = {}      # space -> type -> float64 sum
        self.counts: dict[str, dict[str, int]] = {}           # space -> type -> occurrences
        self.held_out: set[str] = set()                         # types never seen in training captions

    def add(self, space: str, vectors: np.ndarray, occurrences: list[tuple[str, str, str, np.ndarray]]) -> None:
        """vectors (n, d) of one caption's tokens in `space`; occurrences from `word_occurrences` of that
        caption. An occurrence contributes the mean of its tokens' vectors."""
        vectors = np.asarray(vectors, dtype=np.float64)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be (n, d), got shape {vectors.shape}")
        sums, counts = self.sums.setdefault(space, {}), self.counts.setdefault(space, {})
        for typ, kind, cls, tokens in occurrences:
            label = self.labels.setdefault(typ, (kind, cls))
            if label != (kind, cls):
                raise ValueError(f"word type {typ!r} is labelled {label} and also {(kind, cls)}")
            v = vectors[np.asarray(tokens, dtype=np.int64)].mean(axis=0)
            if typ in sums:
                if sums[typ].shape != v.shape:
                    raise ValueError(f"space {space!r} got vectors of width {v.shape[0]}, "
                                     f"earlier {sums[typ].shape[0]}")
                sums[typ] += v
                counts[typ] += 1
            else:
                sums[typ], counts[typ] = v.copy(), 1

    def means(self, space: str) -> tuple[list[str], np.ndarray]:
        """Types of `space` in sorted order and their mean vectors (types, d), float64."""
        if space not in self.sums:
            raise KeyError(f"no vectors were added for space {space!r}")
        types = sorted(self.sums[space])
        if not types:
            return [], np.zeros((0, 0))
        return types, np.stack([self.sums[space][t] / self.counts[space][t] for t in types])

    def precision_at_1(self, space: str, neighbours: bool = False, held_out: bool = False) -> dict:
        """{"precision_at_1": hits / trials (NaN without trials), "trials", "types"} for `space`; with
        neighbours=True also "nearest": {type: nearest other type} over all types (ties resolved
        against the space: a non-synonym wins a tie). held_out=True: trials only for the held-out types
        ("types" then counts the held-out types present); their neighbours are still sought among all types."""
        types, means = self.means(space)
        norms = np.linalg.norm(means, axis=1, keepdims=True) if len(types) else np.zeros((0, 1))
        unit = np.divide(means, norms, out=np.zeros_like(means), where=norms > 0)   # a zero vector: cosine 0
        cos = unit @ unit.T
        labels = [self.labels[t] for t in types]
        hits, trials, nearest = 0, 0, {}
        for i, t in enumerate(types):
            others = [j for j in range(len(types)) if j != i]
            if not others:
                continue
            synonym = {j: labels[j] == labels[i] for j in others}
            # Highest cosine first; among equals, a non-synonym (False sorts first) comes first.
            j = min(others, key=lambda k: (-cos[i, k], synonym[k], k))
            nearest[t] = types[j]
            if any(synonym.values()) and (not held_out or t in self.held_out):
                trials += 1
                hits += synonym[j]
        counted = sum(t in self.held_out for t in types) if held_out else len(types)
        result = {"precision_at_1": hits / trials if trials else float("nan"), "trials": trials,
                  "types": counted}
        if neighbours:
            result["nearest"] = nearest
        return result
