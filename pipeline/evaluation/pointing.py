"""Pointing game for the transport plan: does a grounded word send most of its mass into its region?

Geometry. Every image was preprocessed by resizing its shorter side to the encoder's size S (the longer
side floored) and center-cropping S x S (offsets rounded), and the patch grid tiles that square evenly.
A box goes through exactly those steps, `Preprocess.to_input`, into the crop's unit square: the
shortcut of dividing the original pixels by min(w, h) about the image centre ignores the floor and the
rounding, which shifts a non-square image's boxes by up to a pixel of the S x S input and so moves patch
centres near a box edge in or out of it. A patch "falls inside" a box when its centre does. The chance
rate of a trial is the share of the crop the box covers: a patch picked at random lands there that often.
"""
from __future__ import annotations

import numpy as np

from pipeline.encoders.preprocess import Preprocess


def box_in_crop(box, size, image_size: int) -> np.ndarray:
    """box (x0, y0, x1, y1) in original pixels (x1, y1 exclusive, i.e. the box's far edges), size (w, h),
    image_size S the encoder's input side -> the box in the crop's unit square, clipped to it."""
    # Only the geometry of Preprocess is used; interpolation and normalisation do not move pixels.
    sx, sy, left, top = Preprocess(image_size, "bicubic", (0.0,) * 3, (1.0,) * 3).to_input(int(size[0]), int(size[1]))
    x0, y0, x1, y1 = (float(c) for c in box)
    side = float(image_size)
    out = np.array([(x0 * sx - left) / side, (y0 * sy - top) / side, (x1 * sx - left) / side, (y1 * sy - top) / side])
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
                    size, grid: tuple[int, int], image_size: int) -> None:
        """plan (n, m) of one caption with its own image; char_spans (n, 2) and content (n,) of its
        tokens; phrases [{"start", "end", "box"}] from the grounding file; size (w, h) of the original
        image and image_size the encoder's input side S."""
        for phrase in phrases:
            box = box_in_crop(phrase["box"], size, image_size)
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
