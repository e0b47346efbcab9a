"""Pointing game: does a grounded word (or phrase) put its largest score on a patch inside its region?

The score map is the transport plan (mass per patch) or, as a diagnostic that leaves the plan out, the
cosine similarity of g_i with every patch. Trials, each with its trial count:
- per token: every token of a grounded word (colour word, shape noun, size word where the data says which
  words are which; every token of the phrase where it does not), its argmax patch;
- per phrase, the usual pointing game: the argmax of the phrase's summed scores over its tokens;
- by word kind: the per-token trials split into colour, shape and size. Function words ("in",
  "coloured") and relations are not trials.

Geometry. Every image was preprocessed by resizing its shorter side to the encoder's size S (the longer
side floored) and center-cropping S x S (offsets rounded), and the patch grid tiles that square evenly.
A box goes through exactly those steps, `Preprocess.to_input`, into the crop's unit square. A hit is "the
argmax patch's centre lies in the box", with the box's far edges exclusive (x1, y1 are one past the last
pixel), and chance is scored by the same rule: the share of patch centres inside the box, which is what a
patch picked at random hits. A box that holds no patch centre cannot be hit and is not a trial.
"""
from __future__ import annotations

import numpy as np

from pipeline.encoders.preprocess import Preprocess

WORD_KINDS = ("colour", "shape", "size")


def box_in_crop(box, size, image_size: int) -> np.ndarray:
    """box (x0, y0, x1, y1) in original pixels (x1, y1 exclusive, i.e. the box's far edges), size (w, h),
    image_size S the encoder's input side -> the box in the crop's unit square, clipped to it."""
    # Only the geometry of Preprocess is used; interpolation and normalisation do not move pixels.
    sx, sy, left, top = Preprocess(image_size, "bicubic", (0.0,) * 3, (1.0,) * 3).to_input(int(size[0]), int(size[1]))
    x0, y0, x1, y1 = (float(c) for c in box)
    side = float(image_size)
    out = np.array([(x0 * sx - left) / side, (y0 * sy - top) / side, (x1 * sx - left) / side, (y1 * sy - top) / side])
    return np.clip(out, 0.0, 1.0)


def patches_in_box(grid: tuple[int, int], box_unit: np.ndarray) -> np.ndarray:
    """(gh * gw,) bool, row-major: whether each patch's centre lies in [x0, x1) x [y0, y1)."""
    gh, gw = grid
    cy, cx = (np.arange(gh) + 0.5) / gh, (np.arange(gw) + 0.5) / gw
    inside_x = (box_unit[0] <= cx) & (cx < box_unit[2])
    inside_y = (box_unit[1] <= cy) & (cy < box_unit[3])
    return (inside_y[:, None] & inside_x[None, :]).reshape(-1)


def grounded_tokens(char_spans: np.ndarray, content: np.ndarray, start: int, end: int) -> np.ndarray:
    """Positions of the content tokens whose character span overlaps [start, end)."""
    s, e = char_spans[:, 0], char_spans[:, 1]
    return np.flatnonzero(content & (s < end) & (e > start))


def word_trials(phrase: dict, char_spans: np.ndarray, content: np.ndarray) -> list[tuple[str | None, int, int, np.ndarray]]:
    """(kind, start, end, token positions) of each grounded word of a phrase. Data that annotates its words
    ("words": [{start, end, kind}]) gives one entry per colour, shape or size word; otherwise the whole
    phrase is one entry of kind None (every token of it a trial)."""
    words = phrase["words"] if "words" in phrase else [dict(phrase, kind=None)]
    return [(w["kind"], int(w["start"]), int(w["end"]), grounded_tokens(char_spans, content, int(w["start"]), int(w["end"])))
            for w in words if "words" not in phrase or w.get("kind") in WORD_KINDS]


class Tally:
    def __init__(self):
        self.hits, self.trials, self.chance_sum = 0, 0, 0.0

    def add(self, hit: bool, chance: float) -> None:
        self.hits += bool(hit)
        self.trials += 1
        self.chance_sum += chance

    def result(self) -> dict:
        if self.trials == 0:
            return {"accuracy": float("nan"), "chance": float("nan"), "trials": 0}
        return {"accuracy": self.hits / self.trials, "chance": self.chance_sum / self.trials, "trials": self.trials}


class PointingGame:
    """Accumulates the per-token, per-phrase and per-kind trials of one score map (plan or similarity)."""

    def __init__(self):
        self.tallies = {name: Tally() for name in ("token", "phrase", *WORD_KINDS)}

    def add_caption(self, scores: np.ndarray, char_spans: np.ndarray, content: np.ndarray, phrases: list[dict],
                    size, grid: tuple[int, int], image_size: int) -> None:
        """scores (n, m) of one caption with its own image (larger = more); char_spans (n, 2) and content
        (n,) of its tokens; phrases [{"start", "end", "box", optional "words"}] from the grounding file;
        size (w, h) of the original image and image_size the encoder's input side S."""
        for phrase in phrases:
            inside = patches_in_box(grid, box_in_crop(phrase["box"], size, image_size))
            if not inside.any():   # the region holds no patch centre: nothing to point at
                continue
            chance = float(inside.mean())
            for kind, _, _, tokens in word_trials(phrase, char_spans, content):
                for i in tokens:
                    hit = inside[int(np.argmax(scores[i]))]
                    self.tallies["token"].add(hit, chance)
                    if kind is not None:
                        self.tallies[kind].add(hit, chance)
            tokens = grounded_tokens(char_spans, content, int(phrase["start"]), int(phrase["end"]))
            if len(tokens):
                self.tallies["phrase"].add(inside[int(np.argmax(scores[tokens].sum(axis=0)))], chance)

    def result(self) -> dict:
        return {name: tally.result() for name, tally in self.tallies.items()}
