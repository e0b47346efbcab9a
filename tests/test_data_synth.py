"""The synthetic dataset: determinism, loadability, splits, and grounding that points at the right words and pixels."""
import json
import re

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline.data import load_split
from pipeline.data.synth import assign_splits, synthesize
from pipeline.data.synth_captions import COLOUR_WORDS, SHAPE_WORDS
from pipeline.data.synth_scene import COLOURS, COLOUR_JITTER, render_scene
from pipeline.errors import ConfigError
from stages.data import app

SIZE, N, K, SEED = 64, 40, 3, 5


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    summary = synthesize(out, images=N, captions_per_image=K, image_size=SIZE, seed=SEED,
                         val_fraction=0.2, test_fraction=0.2)
    manifest = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    grounding = json.loads((out / "grounding.json").read_text())
    return out, summary, manifest, grounding


def tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(synth, tmp_path):
    out = synth[0]
    synthesize(tmp_path / "again", images=N, captions_per_image=K, image_size=SIZE, seed=SEED,
               val_fraction=0.2, test_fraction=0.2)
    assert tree(tmp_path / "again") == tree(out)
    synthesize(tmp_path / "other", images=N, captions_per_image=K, image_size=SIZE, seed=SEED + 1,
               val_fraction=0.2, test_fraction=0.2)
    other = tree(tmp_path / "other")
    assert other["images/img00000.png"] != tree(out)["images/img00000.png"]


def test_loads_through_the_jsonl_loader_with_disjoint_splits(synth):
    out, summary, manifest, _ = synth
    by_split = {s: load_split(out / "captions.jsonl", out, split=s) for s in ("train", "val", "test")}
    images = {s: {r.image_id for r in recs} for s, recs in by_split.items()}
    assert [len(images[s]) for s in ("train", "val", "test")] == [24, 8, 8]
    assert not (images["train"] & images["val"] or images["train"] & images["test"] or images["val"] & images["test"])
    assert sum(len(r) for r in by_split.values()) == N * K == summary["captions"] == len(manifest)
    for recs in by_split.values():
        for r in recs:
            assert (out / r.image_path).is_file() and r.caption_id.startswith(r.image_id + "_")
    texts = {}
    for m in manifest:
        texts.setdefault(m["image_id"], []).append(m["caption"].lower().rstrip("."))
    assert all(len(set(t)) == K for t in texts.values())  # several *different* captions per image
    assert summary["splits"]["val"] == {"images": 8, "captions": 8 * K}


def test_phrase_spans_name_the_shape(synth):
    _, _, manifest, grounding = synth
    assert set(grounding) == {m["caption_id"] for m in manifest}
    for m in manifest:
        text, phrases = m["caption"], grounding[m["caption_id"]]
        assert phrases, text
        for p in phrases:
            assert text[p["start"]:p["end"]] == p["text"]
            assert p["start"] == 0 or text[p["start"] - 1] == " "
            assert p["end"] == len(text) or text[p["end"]] in " .,"
            words = p["text"].lower()
            assert any(re.search(rf"\b{w}\b", words) for w in COLOUR_WORDS[p["colour"]]), (text, p)
            assert any(re.search(rf"\b{w}\b", words) for w in SHAPE_WORDS[p["shape"]]), (text, p)


def test_boxes_are_the_drawn_pixels(synth):
    out, _, manifest, grounding = synth
    for i in range(N):
        # Rendering is the first use of image i's generator, so the scene can be rebuilt exactly.
        image, shapes, _, masks = render_scene(np.random.default_rng([SEED, i]), SIZE)
        stored = np.asarray(Image.open(out / f"images/img{i:05d}.png"))
        assert np.array_equal(stored, np.asarray(image))
        boxes = set()
        for n, (shape, mask) in enumerate(zip(shapes, masks)):
            ys, xs = np.nonzero(mask)
            assert shape.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert 0 <= shape.box[0] < shape.box[2] <= SIZE and 0 <= shape.box[1] < shape.box[3] <= SIZE
            visible = mask & ~np.any(masks[n + 1:], axis=0) if n + 1 < len(masks) else mask
            assert visible.sum() >= 0.6 * mask.sum()
            diff = np.abs(stored[visible].astype(int) - np.array(COLOURS[shape.colour]))
            assert diff.max() <= COLOUR_JITTER + 1  # the visible part is painted in the named colour
            boxes.add((shape.kind, shape.colour, shape.box))
        for m in manifest:
            if m["image_id"] == f"img{i:05d}":
                for p in grounding[m["caption_id"]]:
                    assert (p["shape"], p["colour"], tuple(p["box"])) in boxes


RELATIONS = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "over": (1, -1),
             "below": (1, 1), "under": (1, 1), "beneath": (1, 1)}


def test_spatial_relations_match_positions(synth):
    _, _, manifest, grounding = synth
    checked = 0
    for m in manifest:
        phrases = grounding[m["caption_id"]]
        if len(phrases) != 2:
            continue
        between = m["caption"][phrases[0]["end"]:phrases[1]["start"]]
        for word, (axis, sign) in RELATIONS.items():
            if re.search(rf"\b{word}\b", between):
                a, b = ((p["box"][axis] + p["box"][axis + 2]) / 2 for p in phrases)
                assert np.sign(a - b) == sign, m["caption"]
                checked += 1
    assert checked >= 5


def test_rerun_with_fewer_images_removes_the_extra_files(tmp_path):
    synthesize(tmp_path, images=6, captions_per_image=1, image_size=32, seed=0, val_fraction=0, test_fraction=0)
    synthesize(tmp_path, images=3, captions_per_image=1, image_size=32, seed=0, val_fraction=0, test_fraction=0)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["img00000.png", "img00001.png", "img00002.png"]
    assert not list(tmp_path.glob(".*tmp*"))


def test_assign_splits_and_bad_parameters(tmp_path):
    assert assign_splits(800, 0.1, 0.1, 0).count("val") == 80
    assert sorted(set(assign_splits(3, 0.01, 0.01, 0))) == ["test", "train", "val"]
    with pytest.raises(ConfigError, match="val_fraction"):
        synthesize(tmp_path, images=5, captions_per_image=1, image_size=64, seed=0, val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ConfigError, match="image_size"):
        synthesize(tmp_path, images=5, captions_per_image=1, image_size=8, seed=0, val_fraction=0, test_fraction=0)


def test_cli_synth(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("data:\n  images: 5\n  image_size: 48\n")
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "d"), "--config", str(cfg),
                                      "--set", "data.captions_per_image=2", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert re.search(r"wrote 5 images, 10 captions .* to .*d in [\d.]+ s", result.output)
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["params"] == {"images": 5, "captions_per_image": 2, "image_size": 48, "seed": 3,
                                 "val_fraction": 0.1, "test_fraction": 0.1}
    assert Image.open(tmp_path / "d" / "images" / "img00004.png").size == (48, 48)


def test_cli_synth_bad_input_is_one_line_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "d"), "--images", "0"])
    assert result.exit_code == 2 and "error: data.images must be at least 1" in result.output
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "d"), "--set", "data.imgs=3"])
    assert result.exit_code == 2 and "unknown configuration key 'data.imgs'" in result.output
