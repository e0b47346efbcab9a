"""Alignment figures: exact PNG sizes, atomic writes, and the in-box mass share on a hand-computed grid."""
import math
import struct

import numpy as np
import pytest
from matplotlib.figure import Figure

from pipeline.evaluation.figures import draw_alignment, figure_pixels, patch_box_mass

S, GRID = 56, (4, 4)


def png_size(path) -> tuple[int, int]:
    """(width, height) from the PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    assert data[-8:-4] == b"IEND"
    return struct.unpack(">II", data[16:24])


def example(n_words: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(S, S, 3), dtype=np.uint8)
    box = np.array([0.25, 0.25, 0.75, 0.75])
    phrases = [("big red circle", box), ("blue square", np.array([0.0, 0.0, 0.3, 0.2]))]
    words = [(f"word{k}", rng.random(GRID), box) for k in range(n_words)]
    return image, "a big red circle next to a small blue square", phrases, words


@pytest.mark.parametrize("n_words, expected", [(1, (480, 340)), (7, (1200, 625))])
def test_png_has_exactly_the_expected_pixel_size(tmp_path, n_words, expected):
    assert figure_pixels(n_words) == expected
    path = draw_alignment(tmp_path / "fig.png", *example(n_words))
    assert path == tmp_path / "fig.png" and path.is_file()
    assert png_size(path) == expected


@pytest.mark.parametrize("n_words, dpi", [(3, 72), (3, 23), (1, 46), (10, 77)])
def test_pixel_size_holds_at_awkward_dpi(tmp_path, n_words, dpi):
    # For all but dpi 72 here, (pixels / dpi) * dpi falls just below the integer (like 0.29 * 100); a
    # matplotlib that truncates it would lose a pixel row or column.
    width, height = figure_pixels(n_words, dpi)
    if dpi != 72:
        assert int(width / dpi * dpi) < width or int(height / dpi * dpi) < height
    path = draw_alignment(tmp_path / "fig.png", *example(n_words), dpi=dpi)
    assert png_size(path) == (width, height)


def test_panels_wrap_at_five_per_row():
    w1, h1 = figure_pixels(4)     # 5 panels: one row
    w2, h2 = figure_pixels(5)     # 6 panels: two rows, same width
    assert w1 == w2 == 1200 and h2 > h1
    assert figure_pixels(0) == (240, 340)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    out = tmp_path / "figs"
    draw_alignment(out / "a.png", *example(2))
    draw_alignment(out / "a.png", *example(2, seed=1))          # overwriting is fine too
    draw_alignment(out / "b.png", *example(0))
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]


def test_crash_while_saving_leaves_nothing(tmp_path, monkeypatch):
    def broken_savefig(self, fh, **kwargs):
        fh.write(b"\x89PNG\r\n\x1a\n half a picture")
        raise RuntimeError("disk on fire")

    (tmp_path / "old.png").write_bytes(b"previous")
    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk on fire"):
        draw_alignment(tmp_path / "new.png", *example(1))
    with pytest.raises(RuntimeError):
        draw_alignment(tmp_path / "old.png", *example(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.png"]
    assert (tmp_path / "old.png").read_bytes() == b"previous"


def test_rejects_bad_inputs(tmp_path):
    image, caption, phrases, words = example(1)
    with pytest.raises(ValueError):
        draw_alignment(tmp_path / "x.png", image.astype(np.float32), caption, phrases, words)
    with pytest.raises(ValueError):
        draw_alignment(tmp_path / "x.png", image[:, :-1], caption, phrases, words)
    with pytest.raises(ValueError):
        draw_alignment(tmp_path / "x.png", image, caption, phrases, [("w", np.ones(16), phrases[0][1])])
    assert not any(tmp_path.iterdir())


def test_a_word_without_mass_is_drawn(tmp_path):
    image, caption, phrases, _ = example(0)
    path = draw_alignment(tmp_path / "z.png", image, caption, phrases, [("nothing", np.zeros(GRID), phrases[0][1])])
    assert png_size(path) == figure_pixels(1)


# ----------------------------------------------------------------------------- mass inside a box

HEAT = np.arange(1.0, 17.0).reshape(4, 4)      # total 136; patch centres at 0.125, 0.375, 0.625, 0.875


def test_patch_box_mass_hand_computed():
    # x in [0.25, 0.625): only column 1 (0.625 is column 2's centre, on the far edge: out);
    # y in [0.25, 0.875): rows 1 and 2 (0.875, row 3's centre, on the far edge: out) -> 6 + 10.
    assert patch_box_mass(HEAT, [0.25, 0.25, 0.625, 0.875]) == 16 / 136
    # Near edges on a centre are inclusive: columns and rows 1..3 -> 6+7+8 + 10+11+12 + 14+15+16.
    assert patch_box_mass(HEAT, [0.375, 0.375, 1.0, 1.0]) == 99 / 136
    assert patch_box_mass(HEAT, [0.0, 0.0, 1.0, 1.0]) == 1.0
    assert patch_box_mass(HEAT, [0.0, 0.0, 0.125, 1.0]) == 0.0    # column 0's centre on x1: out
    assert patch_box_mass(HEAT, [0.0, 0.0, 0.1250001, 0.1250001]) == 1 / 136


def test_patch_box_mass_on_a_non_square_grid():
    heat = np.zeros((2, 4))
    heat[1, 3] = 3.0            # centre (0.875, 0.75)
    heat[0, 0] = 1.0            # centre (0.125, 0.25)
    assert patch_box_mass(heat, [0.5, 0.5, 1.0, 1.0]) == 0.75
    assert patch_box_mass(heat, [0.5, 0.5, 0.875, 1.0]) == 0.0


def test_patch_box_mass_without_mass_is_nan():
    assert math.isnan(patch_box_mass(np.zeros((4, 4)), [0, 0, 1, 1]))
    with pytest.raises(ValueError):
        patch_box_mass(np.ones(16), [0, 0, 1, 1])
