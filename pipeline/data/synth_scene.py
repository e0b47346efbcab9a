"""Draw one synthetic scene: coloured shapes on a background, with each shape's box.

Two presets: `render_scene` (simple: 1-3 shapes on one of four backgrounds) and `render_scenes` (scenes:
3-6 shapes of distinct colours and kinds on a background every image shares).

Each shape is drawn as its own mask first, so its box is exactly the bounding box of the pixels it
covers (x1, y1 exclusive, PIL's getbbox convention), before any later shape covers part of it.
Placement keeps every shape at least MIN_VISIBLE visible, so a caption never names a shape that
cannot be seen.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
# Saturated colours far apart in hue; backgrounds are kept greyish so a shape's colour is unambiguous.
COLOURS = {"red": (215, 35, 35), "green": (35, 165, 55), "blue": (35, 75, 215), "yellow": (235, 205, 30),
           "purple": (135, 55, 185), "orange": (245, 135, 25), "cyan": (30, 195, 205)}
# "Radius" (half the extent) as a fraction of the canvas side, per size class.
SIZES = {"small": (0.07, 0.10), "medium": (0.12, 0.16), "large": (0.19, 0.24)}
BACKGROUNDS = ("gradient", "stripes", "noise", "plain")
SHAPE_COUNT_P = (0.3, 0.4, 0.3)  # probability of 1, 2, 3 shapes
MIN_VISIBLE = 0.6
COLOUR_JITTER = 14  # per-shape colour variation, so colour is a range, not one exact value


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    size: str
    cx: float
    cy: float
    r: float
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels; x1, y1 exclusive


def outline(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Polygon vertices of a shape of half-extent r centred at (cx, cy); y grows downwards."""
    def ring(n, radii, start=-90.0):
        return [(cx + radii[k % len(radii)] * math.cos(math.radians(start + 360.0 * k / n)),
                 cy + radii[k % len(radii)] * math.sin(math.radians(start + 360.0 * k / n))) for k in range(n)]
    if kind == "square":
        s = 0.85 * r  # a square of half-side r looks much bigger than a circle of radius r
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if kind == "triangle":
        return ring(3, [r])
    if kind == "star":
        return ring(10, [r, 0.42 * r])
    if kind == "diamond":
        return [(cx, cy - r), (cx + 0.7 * r, cy), (cx, cy + r), (cx - 0.7 * r, cy)]
    if kind == "cross":
        a = 0.3 * r
        return [(cx - a, cy - r), (cx + a, cy - r), (cx + a, cy - a), (cx + r, cy - a), (cx + r, cy + a),
                (cx + a, cy + a), (cx + a, cy + r), (cx - a, cy + r), (cx - a, cy + a), (cx - r, cy + a),
                (cx - r, cy - a), (cx - a, cy - a)]
    raise ValueError(f"unknown shape {kind!r}")


def shape_mask(kind: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon(outline(kind, cx, cy, r), fill=255)
    return np.asarray(mask) > 0


def background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    """A low-saturation textured backdrop, float32 HxWx3, and its kind."""
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]

    def muted():
        grey = rng.uniform(70, 200)
        return grey + rng.uniform(-18, 18, 3)

    a, b = muted(), muted()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        t = (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle) + 0.5
        t = np.clip(t, 0, 1)[..., None]
    elif kind == "stripes":
        angle, period = rng.uniform(0, math.pi), rng.uniform(0.04, 0.15)
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) / period
        t = ((np.sin(2 * math.pi * phase) > 0).astype(np.float32) * 0.8 + 0.1)[..., None]
    elif kind == "noise":
        coarse = rng.random((8, 8)).astype(np.float32)
        blotches = np.asarray(Image.fromarray(coarse, "F").resize((size, size), Image.Resampling.BILINEAR))
        t = np.clip(blotches + rng.normal(0, 0.12, (size, size)), 0, 1)[..., None]
    else:
        t = np.zeros((size, size, 1), np.float32)
    return (a * (1 - t) + b * t).astype(np.float32), kind


def place_shapes(rng: np.random.Generator, size: int) -> list[tuple[Shape, np.ndarray]]:
    """Shapes with distinct (colour, kind) pairs, each at least MIN_VISIBLE uncovered by later ones."""
    count = int(rng.choice(len(SHAPE_COUNT_P), p=SHAPE_COUNT_P)) + 1
    colours, sizes = list(COLOURS), list(SIZES)
    pairs = set()
    while len(pairs) < count:
        pairs.add((colours[rng.integers(len(colours))], SHAPES[rng.integers(len(SHAPES))]))
    pairs = sorted(pairs)
    rng.shuffle(pairs)  # sorted then shuffled: independent of set iteration order, so seeded runs match
    for _ in range(100):
        placed = []
        for colour, kind in pairs:
            size_name = sizes[rng.integers(len(sizes))]
            r = rng.uniform(*SIZES[size_name]) * size
            cx, cy = rng.uniform(r + 1, size - r - 1, 2)
            mask = shape_mask(kind, cx, cy, r, size)
            ys, xs = np.nonzero(mask)
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            placed.append((Shape(kind, colour, size_name, float(cx), float(cy), float(r), box), mask))
        covered = np.zeros((size, size), bool)
        ok = True
        for shape, mask in reversed(placed):  # later shapes are drawn on top
            ok &= (mask & ~covered).sum() >= MIN_VISIBLE * mask.sum()
            covered |= mask
        if ok:
            return placed
    return placed[:1]  # a canvas too small for the others; one shape is always fully visible


def overlapping_pairs(masks: list[np.ndarray]) -> set[tuple[int, int]]:
    """Ordered pairs of shapes whose masks share a pixel: a caption may say one is behind the other."""
    return {(a, b) for a in range(len(masks)) for b in range(len(masks)) if a != b and (masks[a] & masks[b]).any()}


def render_scene(rng: np.random.Generator, size: int) -> tuple[Image.Image, list[Shape], str, list[np.ndarray]]:
    """The image, its shapes in drawing order, the background kind, and each shape's full mask."""
    canvas, bg = background(rng, size)
    placed = place_shapes(rng, size)
    for shape, mask in placed:
        colour = np.array(COLOURS[shape.colour], np.float32) + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, 3)
        canvas[mask] = colour
    # No noise over the whole image: noise does not compress, so it would make the PNGs much larger, and the
    # "noise" backgrounds already give the encoder texture to look past.
    image = Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8), "RGB")
    return image, [s for s, _ in placed], bg, [m for _, m in placed]


# The scenes preset: 3-6 shapes, no colour and no kind twice in one image (so each colour word and each
# shape word names exactly one shape), on one background shared by every image, so that only the shapes
# tell two images apart. Sizes are smaller than the simple preset's so six shapes fit on the canvas.
SCENE_SIZES = {"small": (0.06, 0.08), "medium": (0.095, 0.12), "large": (0.135, 0.165)}
MAX_SHAPES = min(len(COLOURS), len(SHAPES))
SCENE_GREYS = ((118.0, 121.0, 124.0), (142.0, 139.0, 136.0))   # low contrast: texture, not a cue
PLACE_TRIES = 60     # positions tried per shape before the whole scene is placed again, smaller
SHRINK = 0.9         # radius factor for each fresh placement of a scene that did not fit
MIN_RADIUS = 1.5     # pixels: below this a shape's mask can come out empty


def scene_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-contrast blotches in the same two greys for every image, float32 HxWx3. Smooth, not per-pixel
    noise, which PNG cannot compress."""
    coarse = rng.random((8, 8)).astype(np.float32)
    t = np.asarray(Image.fromarray(coarse, "F").resize((size, size), Image.Resampling.BILINEAR))[..., None]
    a, b = (np.array(g, np.float32) for g in SCENE_GREYS)
    return (a * (1 - t) + b * t).astype(np.float32)


def place_scene(rng: np.random.Generator, size: int, count: int) -> list[tuple[Shape, np.ndarray]]:
    """`count` shapes of distinct colours and distinct kinds, each at least MIN_VISIBLE uncovered by the
    shapes drawn after it. A shape that finds no place sends the whole scene back to be placed again with
    every radius shrunk, so the count asked for is always the count drawn."""
    if not 1 <= count <= MAX_SHAPES:
        raise ValueError(f"a scene holds 1 to {MAX_SHAPES} shapes, got {count}")
    names = list(COLOURS)
    colours = [names[k] for k in rng.choice(len(names), count, replace=False)]
    kinds = [SHAPES[k] for k in rng.choice(len(SHAPES), count, replace=False)]
    size_names = [list(SCENE_SIZES)[k] for k in rng.integers(len(SCENE_SIZES), size=count)]
    radii = [rng.uniform(*SCENE_SIZES[s]) * size for s in size_names]
    scale = 1.0
    while True:
        placed = _try_place(rng, size, colours, kinds, size_names, [max(MIN_RADIUS, r * scale) for r in radii])
        if placed is not None:
            return placed
        scale *= SHRINK


def _try_place(rng, size, colours, kinds, size_names, radii) -> list[tuple[Shape, np.ndarray]] | None:
    placed, visible, full = [], [], []   # visible[j]: the part of shape j no later shape covers yet
    for colour, kind, size_name, r in zip(colours, kinds, size_names, radii):
        for _ in range(PLACE_TRIES):
            cx, cy = rng.uniform(r + 1, size - r - 1, 2)
            mask = shape_mask(kind, cx, cy, r, size)
            if not mask.any():
                continue
            left = [v & ~mask for v in visible]
            if all(lv.sum() >= MIN_VISIBLE * area for lv, area in zip(left, full)):
                break
        else:
            return None
        ys, xs = np.nonzero(mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        placed.append((Shape(kind, colour, size_name, float(cx), float(cy), float(r), box), mask))
        visible, full = left + [mask], full + [int(mask.sum())]
    return placed


def render_scenes(rng: np.random.Generator, size: int, shape_range: tuple[int, int]
                  ) -> tuple[Image.Image, list[Shape], list[np.ndarray], list[int]]:
    """The scenes preset's image: its shapes in drawing order, each shape's full mask, and the pixels of
    each that stay visible once the later shapes are drawn."""
    count = int(rng.integers(shape_range[0], shape_range[1] + 1))
    canvas = scene_background(rng, size)
    placed = place_scene(rng, size, count)
    covered, areas = np.zeros((size, size), bool), [0] * len(placed)
    for k in range(len(placed) - 1, -1, -1):
        areas[k] = int((placed[k][1] & ~covered).sum())
        covered |= placed[k][1]
    for shape, mask in placed:
        colour = np.array(COLOURS[shape.colour], np.float32) + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, 3)
        canvas[mask] = colour
    image = Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8), "RGB")
    return image, [s for s, _ in placed], [m for _, m in placed], areas
