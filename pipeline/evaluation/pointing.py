"""Pointing game: does a grounded word put its largest score on a patch inside its region?

The score map is the transport plan (mass per patch) or, as a diagnostic that leaves the plan out, the
cosine similarity of g_i with every patch. Trials:
- per word, the headline: every annotated colour, shape or size word (the whole phrase where the data
  does not annotate words) scored once on its map summed over its word pieces, so a word the tokenizer
  splits in three counts once, not three times;
- per token (word piece), kept as a secondary view: every piece of a grounded word on its own row;
- per phrase, the usual pointing game: the argmax of the phrase's summed scores over its tokens;
- by word kind: colour, shape and size, both per token and per word. Function words ("in",
  "coloured") and relations are not trials.
Each per-word trial also carries what the baselines (baselines.py) would score on it, so the model and
its baselines are compared on exactly the same trials.

Geometry. Every image was preprocessed by resizing its shorter side to the encoder's size S (the longer
side floored) and center-cropping S x S (offsets rounded), and the patch grid tiles that square evenly.
A box goes through exactly those steps, `Preprocess.to_input`, into the crop's unit square. A hit is "the
argmax patch's centre lies in the box", with the box's far edges exclusive (x1, y1 are one past the last
pixel), and chance is scored by the same rule: the share of patch centres inside the box, which is what a
patch picked at random hits. A box that holds no patch centre cannot be hit and is not a trial.

Ties are resolved against the map, as everywhere in evaluation (metrics.py, synonyms.py): a tie is a hit
only if every tied patch is inside, so a constant map never scores by landing on patch 0. A non-finite
score of a grounded caption stops evaluation, naming the caption: NaN compares False with everything
and would otherwise pick an arbitrary patch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.encoders.preprocess import Preprocess
from pipeline.errors import DataError

WORD_KINDS = ("colour", "shape", "size")


def _to_input(size, image_size: int):
    # Only the geometry of Preprocess is used; interpolation and normalisation do not move pixels.
    return Preprocess(image_size, "bicubic", (0.0,) * 3, (1.0,) * 3).to_input(int(size[0]), int(size[1]))


def box_in_crop(box, size, image_size: int) -> np.ndarray:
    """box (x0, y0, x1, y1) in original pixels (x1, y1 exclusive, i.e. the box's far edges), size (w, h),
    image_size S the encoder's input side -> the box in the crop's unit square, clipped to it."""
    sx, sy, left, top = _to_input(size, image_size)
    x0, y0, x1, y1 = (float(c) for c in box)
    side = float(image_size)
    out = np.array([(x0 * sx - left) / side, (y0 * sy - top) / side, (x1 * sx - left) / side, (y1 * sy - top) / side])
    return np.clip(out, 0.0, 1.0)


def point_patch(point, size, image_size: int, grid: tuple[int, int]) -> int:
    """The row-major index of the patch that holds a point (x, y) in original pixels; a point outside the
    crop goes to the nearest edge patch."""
    sx, sy, left, top = _to_input(size, image_size)
    gh, gw = grid
    x, y = (float(point[0]) * sx - left) / image_size, (float(point[1]) * sy - top) / image_size
    col, row = min(max(int(np.floor(x * gw)), 0), gw - 1), min(max(int(np.floor(y * gh)), 0), gh - 1)
    return row * gw + col


def patches_in_box(grid: tuple[int, int], box_unit: np.ndarray) -> np.ndarray:
    """(gh * gw,) bool, row-major: whether each patch's centre lies in [x0, x1) x [y0, y1)."""
    gh, gw = grid
    cy, cx = (np.arange(gh) + 0.5) / gh, (np.arange(gw) + 0.5) / gw
    inside_x = (box_unit[0] <= cx) & (cx < box_unit[2])
    inside_y = (box_unit[1] <= cy) & (cy < box_unit[3])
    return (inside_y[:, None] & inside_x[None, :]).reshape(-1)


def pointing_hit(row: np.ndarray, inside: np.ndarray) -> bool:
    """Whether the map's argmax lies inside; a tie is a hit only if every tied patch is inside."""
    row = np.asarray(row)
    return bool(inside[row == row.max()].all())


def shape_priors(shapes: list[dict] | None, inside: np.ndarray, size, grid: tuple[int, int],
                 image_size: int) -> tuple[float, float]:
    """The object priors on one target (inside: its patches): the expected hit of pointing at the patch
    holding the centre of one of the image's shapes chosen uniformly (exact: the mean over shapes), and the
    hit of pointing at the largest visible shape's centre (a tie in area is a hit only if every tied shape's
    centre is inside). NaN, NaN where the image's shapes are not known."""
    if not shapes:
        return float("nan"), float("nan")
    hits = np.array([inside[point_patch(s["centre"], size, image_size, grid)] for s in shapes], dtype=np.float64)
    area = np.array([float(s["area"]) for s in shapes])
    return float(hits.mean()), float(hits[area == area.max()].all())


def grounded_tokens(char_spans: np.ndarray, content: np.ndarray, start: int, end: int) -> np.ndarray:
    """Positions of the content tokens whose character span overlaps [start, end)."""
    s, e = char_spans[:, 0], char_spans[:, 1]
    return np.flatnonzero(content & (s < end) & (e > start))


def word_trials(phrase: dict, char_spans: np.ndarray, content: np.ndarray) -> list[tuple[str | None, int, int, np.ndarray]]:
    """(kind, start, end, token positions) of each grounded word of a phrase. Data that annotates its words
    ("words": [{start, end, kind}]) gives one entry per colour, shape or size word; otherwise the whole
    phrase is one entry of kind None."""
    words = phrase["words"] if "words" in phrase else [dict(phrase, kind=None)]
    return [(w["kind"], int(w["start"]), int(w["end"]), grounded_tokens(char_spans, content, int(w["start"]), int(w["end"])))
            for w in words if "words" not in phrase or w.get("kind") in WORD_KINDS]


def check_finite_map(scores: np.ndarray, content: np.ndarray, caption_id, name: str) -> None:
    """Raise DataError naming the caption if a content token's row of the map holds NaN or inf."""
    rows = np.asarray(scores)[np.asarray(content, dtype=bool)]
    bad = ~np.isfinite(rows)
    if bad.any():
        raise DataError(f"{int(bad.sum())} of {rows.size} scores of the {name} map are not finite, so no patch can "
                        f"be pointed at; check the checkpoint (a run that diverged) and the cache's features "
                        f"(`groundedbert cache verify`)", item=f"caption {caption_id}")


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


@dataclass
class WordTrials:
    """The per-word trials of one map, one entry per trial: what the bootstrap and the baselines need."""
    image: np.ndarray           # int: the trial's image (the bootstrap's cluster)
    kind: np.ndarray            # str: colour, shape, size, or "" for an unannotated phrase
    hit: np.ndarray             # 0/1 on the model's map
    chance: np.ndarray          # uniform chance: share of patch centres in the box
    object_prior: np.ndarray    # expected hit of a patch at a uniformly chosen shape's centre (NaN: shapes unknown)
    largest_shape: np.ndarray   # hit of the patch at the largest shape's centre (NaN: shapes unknown)
    any_word: np.ndarray        # hit of the caption's map summed over all its content tokens
    multi: np.ndarray           # bool: the trial's image has two shapes or more
    shapes_known: bool          # every trial's image lists all its shapes (format 2)


class PointingGame:
    """Accumulates the per-word, per-token, per-phrase and per-kind trials of one score map."""

    def __init__(self, name: str = "score"):
        self.name = name
        self.tallies = {name: Tally() for name in ("token", "phrase", *WORD_KINDS)}
        self.records: list[tuple] = []          # (image, kind, hit, chance, object prior, largest, any-word)
        self.images: dict = {}                  # image key -> cluster number
        self.shape_count: dict[int, int] = {}   # cluster -> shapes of the image (format 2)
        self.named: dict[int, set] = {}         # cluster -> distinct boxes named in its captions
        self.captions = 0

    def add_caption(self, scores: np.ndarray, char_spans: np.ndarray, content: np.ndarray, phrases: list[dict],
                    size, grid: tuple[int, int], image_size: int, *, image=None, shapes: list[dict] | None = None,
                    caption_id=None) -> None:
        """scores (n, m) of one caption with its own image (larger = more); char_spans (n, 2) and content
        (n,) of its tokens; phrases [{"start", "end", "box", optional "words"}] from the grounding file;
        size (w, h) of the original image and image_size the encoder's input side S. image: a key shared by
        the captions of one image (the bootstrap resamples images); shapes: every shape of the image
        [{box, centre, area}] where the file lists them (format 2), for the object priors."""
        self.captions += 1
        content = np.asarray(content, dtype=bool)
        check_finite_map(scores, content, caption_id if caption_id is not None else self.captions - 1, self.name)
        cluster = self.images.setdefault(("caption", self.captions) if image is None else image, len(self.images))
        if shapes is not None:
            self.shape_count[cluster] = len(shapes)
        named = self.named.setdefault(cluster, set())
        any_word = np.asarray(scores)[content].sum(axis=0)
        for phrase in phrases:
            named.add(tuple(float(c) for c in phrase["box"]))
            inside = patches_in_box(grid, box_in_crop(phrase["box"], size, image_size))
            if not inside.any():   # the region holds no patch centre: nothing to point at
                continue
            chance = float(inside.mean())
            prior, largest = shape_priors(shapes, inside, size, grid, image_size)
            any_hit = float(pointing_hit(any_word, inside)) if content.any() else float("nan")
            for kind, _, _, tokens in word_trials(phrase, char_spans, content):
                if not len(tokens):   # cut by truncation
                    continue
                for i in tokens:
                    hit = pointing_hit(scores[i], inside)
                    self.tallies["token"].add(hit, chance)
                    if kind is not None:
                        self.tallies[kind].add(hit, chance)
                hit = pointing_hit(scores[tokens].sum(axis=0), inside)
                self.records.append((cluster, kind or "", float(hit), chance, prior, largest, any_hit))
            tokens = grounded_tokens(char_spans, content, int(phrase["start"]), int(phrase["end"]))
            if len(tokens):
                self.tallies["phrase"].add(pointing_hit(scores[tokens].sum(axis=0), inside), chance)

    def word_trials(self) -> WordTrials:
        known = bool(self.records) and all(c in self.shape_count for c in self.named)
        count = self.shape_count if known else {c: len(boxes) for c, boxes in self.named.items()}
        columns = list(zip(*self.records)) if self.records else [()] * 7
        image = np.asarray(columns[0], dtype=np.int64)
        return WordTrials(image=image, kind=np.asarray(columns[1], dtype=str),
                          **{k: np.asarray(v, dtype=np.float64) for k, v in zip(
                              ("hit", "chance", "object_prior", "largest_shape", "any_word"), columns[2:])},
                          multi=np.asarray([count.get(int(c), 0) >= 2 for c in image], dtype=bool),
                          shapes_known=known)

    def result(self) -> dict:
        """Per token, per phrase and per kind (per token); the per-word view: baselines.word_result."""
        return {name: tally.result() for name, tally in self.tallies.items()}
