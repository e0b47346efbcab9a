"""Alignment pictures: where each grounded word of a caption sends its transport mass on the image.

The pointing game (pointing.py) reduces a word's plan row to one hit or miss; a picture shows the whole
row, which is how one tells a word that spreads over its object from one that collapses onto a single
patch, or that splits between two objects. One PNG per caption: a first panel with the image and every
phrase's box, then one panel per grounded word with its mass over the patch grid as a heatmap on the
dimmed image, its phrase's box, its argmax patch and the share of its mass inside the box.

Drawn with matplotlib's object API (`Figure` + `FigureCanvasAgg`), never pyplot: no global figure
registry, no backend switch, nothing shared between calls, so it is safe from threads and worker
processes. The layout is fixed arithmetic (no tight/constrained layout), so the PNG's pixel size depends
only on the number of words and the dpi (`figure_pixels`); the file is written atomically.

Geometry is the pointing game's: everything lives in the crop's unit square, x right and y down, and a
patch (row, col) of a gh x gw grid covers [col/gw, (col+1)/gw) x [row/gh, (row+1)/gh).
"""
from __future__ import annotations

import math
import io
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from pipeline.evaluation.pointing import patches_in_box
from pipeline.io.atomic import write_bytes_atomic

PANELS_PER_ROW = 5
PANEL_IN = 2.4            # width and height of one panel's cell, inches, without its title band
PANEL_TITLE_IN = 0.45     # band above each panel for its title (two lines)
MARGIN_IN = 0.1           # image inset within its cell, each side
HEADER_IN = 0.55          # band at the top for the caption (at most CAPTION_LINES lines)
CAPTION_LINES = 2
CAPTION_FONT, TITLE_FONT, LABEL_FONT = 10, 9, 7
DIM = 0.45                # brightness of the image under a heatmap
PHRASE_COLOURS = ("#ffd400", "#00e5ff", "#ff4fd8", "#7dff4f", "#ff8c1a", "#b388ff", "#ffffff", "#ff4040")


def patch_box_mass(heat: np.ndarray, box_unit: np.ndarray) -> float:
    """Share of a word's mass `heat` (gh, gw) on patches whose centre ((col + .5) / gw, (row + .5) / gh)
    lies in the box [x0, x1) x [y0, y1) (unit square; far edges exclusive, so a patch centre exactly on
    x1 or y1 is outside). NaN when the word carries no mass at all."""
    heat = np.asarray(heat, dtype=np.float64)
    if heat.ndim != 2:
        raise ValueError(f"heat must be (gh, gw), got shape {heat.shape}")
    inside = patches_in_box(heat.shape, np.asarray(box_unit, dtype=np.float64)).reshape(heat.shape)
    total = float(heat.sum())
    if total == 0.0:
        return float("nan")
    return float(heat[inside].sum() / total)


def _grid(n_words: int) -> tuple[int, int]:
    """(columns, rows) of the panels: the phrase panel plus one per word, PANELS_PER_ROW at most a row."""
    if n_words < 0:
        raise ValueError(f"n_words must be >= 0, got {n_words}")
    panels = n_words + 1
    return min(panels, PANELS_PER_ROW), math.ceil(panels / PANELS_PER_ROW)


def _size_inches(n_words: int) -> tuple[float, float]:
    cols, rows = _grid(n_words)
    return cols * PANEL_IN, HEADER_IN + rows * (PANEL_TITLE_IN + PANEL_IN)


def _pixels(inches: float, dpi: float) -> int:
    return int(round(inches * dpi))


def _inches_for(pixels: int, dpi: float) -> float:
    """Smallest figure side in inches that Agg renders as exactly `pixels`. Older matplotlib truncates
    inches * dpi, and e.g. 0.29 * 100 is 28.999...; recent versions round such near-integers up
    themselves, and this is then a no-op."""
    inches = pixels / dpi
    while inches * dpi < pixels:
        inches = math.nextafter(inches, math.inf)
    return inches


def figure_pixels(n_words: int, dpi: int = 100) -> tuple[int, int]:
    """(width, height) in pixels of the PNG `draw_alignment` writes for `n_words` words at `dpi`."""
    w, h = _size_inches(n_words)
    return _pixels(w, dpi), _pixels(h, dpi)


def _wrap_caption(caption: str, width_in: float) -> str:
    """The caption in at most CAPTION_LINES lines fitting the figure's width, an ellipsis if cut."""
    chars = max(int(width_in * 72 / (0.62 * CAPTION_FONT)), 10)   # DejaVu Sans averages ~0.55 em a char; some slack
    lines = textwrap.wrap(" ".join(caption.split()), width=chars) or [""]
    if len(lines) > CAPTION_LINES:
        lines = lines[:CAPTION_LINES]
        lines[-1] = lines[-1][:chars - 1].rstrip() + "\u2026"
    return "\n".join(lines)


def _clip_text(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars - 1] + "\u2026"


def _panel(fig: Figure, index: int, n_words: int, title: str):
    """The square image axes of panel `index` (row-major), placed in fixed figure fractions."""
    cols, _ = _grid(n_words)
    fig_w, fig_h = _size_inches(n_words)
    row, col = divmod(index, cols)
    left = col * PANEL_IN + MARGIN_IN
    top = HEADER_IN + row * (PANEL_TITLE_IN + PANEL_IN) + PANEL_TITLE_IN   # from the figure's top edge
    side = PANEL_IN - 2 * MARGIN_IN
    ax = fig.add_axes((left / fig_w, 1.0 - (top + side) / fig_h, side / fig_w, side / fig_h))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=TITLE_FONT, pad=3)
    return ax


def _show(ax, image: np.ndarray) -> None:
    # extent (left, right, bottom, top) = (0, 1, 1, 0): the unit square with y down, whatever S is.
    ax.imshow(image, extent=(0, 1, 1, 0), interpolation="nearest")
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)


def _box(ax, box_unit: np.ndarray, colour: str, width: float = 1.8) -> None:
    x0, y0, x1, y1 = (float(c) for c in box_unit)
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=width))


def _check_box(box_unit) -> np.ndarray:
    box = np.asarray(box_unit, dtype=np.float64)
    if box.shape != (4,):
        raise ValueError(f"a box is [x0, y0, x1, y1] in the unit square, got shape {box.shape}")
    return box


def draw_alignment(path: Path, image: np.ndarray, caption: str, phrases: list[tuple[str, np.ndarray]],
                   words: list[tuple[str, np.ndarray, np.ndarray]], dpi: int = 100) -> Path:
    """Write the alignment picture of one caption to `path` (PNG) and return the path.

    image (S, S, 3) uint8, the crop as the encoder saw it; phrases [(label, box_unit)] with box_unit
    [x0, y0, x1, y1] in the crop's unit square; words [(word, heat, box_unit)] with heat (gh, gw) the
    word's transport mass over the patch grid (row-major as the plan's columns) and box_unit its
    phrase's box. The PNG is exactly `figure_pixels(len(words), dpi)` pixels."""
    path = Path(path)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1] or image.dtype != np.uint8:
        raise ValueError(f"image must be (S, S, 3) uint8, got {image.shape} {image.dtype}")
    phrases = [(str(label), _check_box(box)) for label, box in phrases]
    words = [(str(w), np.asarray(heat, dtype=np.float64), _check_box(box)) for w, heat, box in words]
    for w, heat, _ in words:
        if heat.ndim != 2 or not np.isfinite(heat).all() or (heat < 0).any():
            raise ValueError(f"heat of {w!r} must be a finite non-negative (gh, gw) array, got {heat.shape}")

    n = len(words)
    width_px, height_px = figure_pixels(n, dpi)
    fig = Figure(figsize=(_inches_for(width_px, dpi), _inches_for(height_px, dpi)), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    try:
        fig.suptitle(_wrap_caption(caption, _size_inches(n)[0]), fontsize=CAPTION_FONT,
                     y=1.0 - 0.06 / _size_inches(n)[1], va="top")

        ax = _panel(fig, 0, n, f"{len(phrases)} phrase{'s' if len(phrases) != 1 else ''}")
        _show(ax, image)
        for k, (label, box) in enumerate(phrases):
            colour = PHRASE_COLOURS[k % len(PHRASE_COLOURS)]
            _box(ax, box, colour)
            # Above the box's top edge, or just inside it when that edge is at the top of the crop.
            at_top = float(box[1]) < 0.08
            ax.text(float(box[0]), float(box[1]), _clip_text(label, 28), fontsize=LABEL_FONT, color="black",
                    va="top" if at_top else "bottom", ha="left", clip_on=True,
                    bbox=dict(boxstyle="square,pad=0.15", facecolor=colour, edgecolor="none", alpha=0.85))

        dimmed = (image.astype(np.float64) / 255.0) * DIM
        for k, (word, heat, box) in enumerate(words, start=1):
            share = patch_box_mass(heat, box)
            label = "no mass" if math.isnan(share) else f"{share:.0%} of mass in box"
            ax = _panel(fig, k, n, f"{_clip_text(word, 26)}\n{label}")
            _show(ax, dimmed)
            peak = float(heat.max())
            if peak > 0:
                # Opacity follows the mass: patches the word ignores leave the (dimmed) image visible.
                ax.imshow(heat, extent=(0, 1, 1, 0), cmap="inferno", vmin=0.0, vmax=peak,
                          alpha=0.25 + 0.7 * heat / peak, interpolation="nearest")
            ax.set_xlim(0, 1)
            ax.set_ylim(1, 0)
            _box(ax, box, "#00e5ff")
            if peak > 0:
                gh, gw = heat.shape
                row, col = divmod(int(np.argmax(heat)), gw)
                ax.plot([(col + 0.5) / gw], [(row + 0.5) / gh], marker="o", markersize=7, markerfacecolor="none",
                        markeredgecolor="#7dff4f", markeredgewidth=1.8, linestyle="none")

        png = io.BytesIO()   # rendered first: its size is known, and a full disk refuses it before a byte is written
        fig.savefig(png, format="png", dpi=dpi, facecolor="white")
        write_bytes_atomic(path, png.getbuffer())
    finally:
        fig.clear()
    return path
