"""Pointing game for the transport plan: does a grounded word send most of its mass into its region?

Geometry. Every image was preprocessed by resizing its shorter side to the encoder's size and
center-cropping a square (pipeline/cache_format.py), and the patch grid tiles that square evenly. In the
original pixels the crop is therefore the central min(w, h) square, so a box maps into the crop's unit
square by shifting and dividing by min(w, h); the encoder's resolution drops out (up to the resize's
rounding, under a pixel). A patch "falls inside" a box when its centre does. The chance rate of a trial
is the share of the crop the box covers: a patch picked at random lands there that often.
"""
from __future__ import annotations

import numpy as np


def box_in_crop(box, size) -> np.ndarray:
    """box (x0, y0, x1, y1) in original pixels, size (w, h) -> the box in the crop's unit square,
    clipped to it."""
    w, h = float(size[0]), float(size[1])
    side = min(w, h)
    left, top = (w - side) / 2.0, (h - side) / 2.0
    x0, y0, x1, y1 = (float(c) for c in box)
    out = np.array([(x0 - left) / side, (y0 - top) / side, (x1 - left) / side, (y1 - top) / side])
    return np.clip(out, 0.0, 1.0)


def box_area_fraction(box_unit: np.ndarray) -> float:
    return float(max(box_unit[2] - box_unit[0], 0.0) * max(box_unit[3] - box_unit[1], 0.0))


def patch_in_box(patch: int, grid: tuple[int, int], box_unit: np.ndarray) -> bool:
    """Whether the centre of patch number `patch` (row-major over grid (gh, gw)) lies inside the box."""
    gh, gw = grid
    row, col = divmod(int(patch), gw)
    cx, cy = (col + 0.5) / gw, (row + 0.5) / gh
    return bool(box_unit[0] <= cx <= box_unit[2] and box_unit[1] <= cy <= box_unit[3])


def grounded_tokens(char_spans: np.ndarray, content: np.ndarray, start: int, end: int) -> np.ndarray:
    """Positions of the content tokens whose character span overlaps [start, end)."""
    s, e = char_spans[:, 0], char_spans[:, 1]
    return np.flatnonzero(content & (s < end) & (e > start))


class PointingGame:
    """Accumulates trials: one per (grounded phrase, token of that phrase)."""

    def __init__(self):
        self.hits, self.trials, self.chance_sum = 0, 0, 0.0

    def add_caption(self, plan: np.ndarray, char_spans: np.ndarray, content: np.ndarray, phrases: list[dict],
                    size, grid: tuple[int, int]) -> None:
        """plan (n, m) of one caption with its own image; char_spans (n, 2) and content (n,) of its
        tokens; phrases [{"start", "end", "box"}] from the grounding file."""
        for phrase in phrases:
            box = box_in_crop(phrase["box"], size)
            area = box_area_fraction(box)
            if area == 0.0:   # the region lies outside the crop: nothing to point at
                continue
            for i in grounded_tokens(char_spans, content, int(phrase["start"]), int(phrase["end"])):
                self.trials += 1
                self.hits += patch_in_box(int(np.argmax(plan[i])), grid, box)
                self.chance_sum += area

    def result(self) -> dict:
        if self.trials == 0:
            return {"accuracy": float("nan"), "chance": float("nan"), "trials": 0}
        return {"accuracy": self.hits / self.trials, "chance": self.chance_sum / self.trials, "trials": self.trials}
