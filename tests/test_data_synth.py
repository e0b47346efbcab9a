"""The synthetic dataset: determinism, loadability, splits, and grounding that points at the right words and pixels.

The simple preset's files are pinned by hash; the scenes preset (the default) is checked for what makes it hard:
shape and named counts, held-out synonyms, asides that name nothing, and grounding.json format 2."""
import hashlib
import inspect
import json
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline.config import REPO_ROOT, load_defaults, resolve
from pipeline.data import load_split
from pipeline.data.synth import assign_splits, synthesize
from pipeline.data.synth_captions import COLOUR_WORDS, HELD_OUT, SHAPE_WORDS
from pipeline.data.synth_scene import COLOURS, COLOUR_JITTER, MAX_SHAPES, MIN_VISIBLE, render_scene, render_scenes
from pipeline.errors import ConfigError
from stages.data import app

SIZE, N, K, SEED = 64, 40, 3, 5
SIMPLE = {"preset": "simple"}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    summary = synthesize(out, images=N, captions_per_image=K, image_size=SIZE, seed=SEED,
                         val_fraction=0.2, test_fraction=0.2, **SIMPLE)
    manifest = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    grounding = json.loads((out / "grounding.json").read_text())
    return out, summary, manifest, grounding


def tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(synth, tmp_path):
    out = synth[0]
    synthesize(tmp_path / "again", images=N, captions_per_image=K, image_size=SIZE, seed=SEED,
               val_fraction=0.2, test_fraction=0.2, **SIMPLE)
    assert tree(tmp_path / "again") == tree(out)
    synthesize(tmp_path / "other", images=N, captions_per_image=K, image_size=SIZE, seed=SEED + 1,
               val_fraction=0.2, test_fraction=0.2, **SIMPLE)
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


@pytest.mark.parametrize("preset", ["simple", "scenes"])
def test_rerun_with_fewer_images_removes_the_extra_files(tmp_path, preset):
    for images in (6, 3):
        synthesize(tmp_path, images=images, captions_per_image=1, image_size=32, seed=0, val_fraction=0,
                   test_fraction=0, preset=preset)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["img00000.png", "img00001.png", "img00002.png"]
    assert not list(tmp_path.glob(".*tmp*"))


def test_assign_splits_and_bad_parameters(tmp_path):
    assert assign_splits(800, 0.1, 0.1, 0).count("val") == 80
    assert sorted(set(assign_splits(3, 0.01, 0.01, 0))) == ["test", "train", "val"]
    with pytest.raises(ConfigError, match="val_fraction"):
        synthesize(tmp_path, images=5, captions_per_image=1, image_size=64, seed=0, val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ConfigError, match="image_size"):
        synthesize(tmp_path, images=5, captions_per_image=1, image_size=8, seed=0, val_fraction=0, test_fraction=0)
    for knobs, key in [({"shapes": (0, 2)}, "data.shapes"), ({"shapes": (4, 2)}, "data.shapes"),
                       ({"shapes": (3, 7)}, "data.shapes"), ({"named": (3, 1)}, "data.named"),
                       ({"named": (2, 2), "shapes": (1, 3)}, "data.named"), ({"named": (1, 3)}, "data.named"),
                       ({"shapes": [3]}, "data.shapes"), ({"nonvisual_fraction": 1.5}, "data.nonvisual_fraction"),
                       ({"preset": "hard"}, "data.preset")]:
        with pytest.raises(ConfigError, match=re.escape(key)):
            synthesize(tmp_path, images=5, captions_per_image=1, image_size=64, seed=0, val_fraction=0,
                       test_fraction=0, **knobs)


def test_cli_synth(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("data:\n  images: 5\n  image_size: 48\n")
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "d"), "--config", str(cfg),
                                      "--set", "data.captions_per_image=2", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert re.search(r"wrote 5 images, 10 captions .* to .*d in [\d.]+ s", result.output)
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["params"] == {"preset": "scenes", "images": 5, "captions_per_image": 2, "image_size": 48,
                                 "seed": 3, "val_fraction": 0.1, "test_fraction": 0.1, "shapes": [3, 6],
                                 "named": [1, 2], "nonvisual_fraction": 0.4, "held_out_synonyms": True}
    assert json.loads((tmp_path / "d" / "grounding.json").read_text())["format"] == 2
    assert Image.open(tmp_path / "d" / "images" / "img00004.png").size == (48, 48)
    # The simple preset's summary keeps its old parameters: no preset, no scene knobs.
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "s"), "--config", str(cfg), "--preset", "simple",
                                      "--set", "data.named=[1,1]"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["params"] == {"images": 5, "captions_per_image": 3, "image_size": 48, "seed": 0,
                                 "val_fraction": 0.1, "test_fraction": 0.1}


def test_cli_synth_bad_input_is_one_line_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "d"), "--images", "0"])
    assert result.exit_code == 2 and "error: data.images must be at least 1" in result.output
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "d"), "--set", "data.imgs=3"])
    assert result.exit_code == 2 and "unknown configuration key 'data.imgs'" in result.output
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "d"), "--preset", "hard"])
    assert result.exit_code == 2 and "error: data.preset must be scenes or simple, got 'hard'" in result.output


# --- the simple preset, pinned ------------------------------------------------------------------------------

# sha256 over every file (path, NUL, bytes, in path order) of the simple preset at these parameters, as it was
# written before the scenes preset existed: the simple preset must keep giving the same files.
SIMPLE_PINNED = "6476ae1a1e5d1172ca7cb2bd9e7da02a183e5a9ca457b7dc0c21e425142336d4"


def test_simple_preset_is_byte_identical_to_the_pinned_files(tmp_path):
    synthesize(tmp_path, images=12, captions_per_image=3, image_size=224, seed=0, val_fraction=0.1,
               test_fraction=0.1, preset="simple", shapes=(6, 6), named=(2, 2), nonvisual_fraction=1.0,
               held_out_synonyms=False)   # the scene knobs, far from their defaults, change nothing
    digest = hashlib.sha256()
    for name, data in tree(tmp_path).items():
        digest.update(name.encode() + b"\0" + data)
    assert digest.hexdigest() == SIMPLE_PINNED


def test_library_defaults_are_the_params_yaml_defaults():
    data = load_defaults(REPO_ROOT / "params.yaml")["data"]
    defaults = {name: p.default for name, p in inspect.signature(synthesize).parameters.items()
                if p.default is not inspect.Parameter.empty}
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()} == {k: data[k] for k in defaults}
    assert data["preset"] == "scenes" and data["images"] == 1000


# --- the scenes preset ---------------------------------------------------------------------------------------

SCENE_N, SCENE_SIZE = 80, 96
HELD = {w for words in HELD_OUT.values() for w in words.values()}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    summary = synthesize(out, images=SCENE_N, captions_per_image=K, image_size=SCENE_SIZE, seed=SEED,
                         val_fraction=0.2, test_fraction=0.2, preset="scenes", shapes=(3, 6), named=(1, 2),
                         nonvisual_fraction=0.4, held_out_synonyms=True)
    manifest = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    grounding = json.loads((out / "grounding.json").read_text())
    return out, summary, manifest, grounding


@pytest.mark.parametrize("size, shape_range", [(224, (3, 6)), (224, (6, 6)), (32, (6, 6)), (48, (1, 6))])
def test_scene_shape_counts_distinct_and_visible(size, shape_range):
    counts = Counter()
    for i in range(60):
        image, shapes, masks, areas = render_scenes(np.random.default_rng([7, i]), size, shape_range)
        counts[len(shapes)] += 1
        assert shape_range[0] <= len(shapes) <= shape_range[1] <= MAX_SHAPES
        assert len({s.colour for s in shapes}) == len(shapes) == len({s.kind for s in shapes})
        pixels = np.asarray(image)
        for k, (shape, mask) in enumerate(zip(shapes, masks)):
            visible = mask & ~np.any(masks[k + 1:], axis=0) if k + 1 < len(masks) else mask
            assert areas[k] == visible.sum() >= MIN_VISIBLE * mask.sum() > 0
            ys, xs = np.nonzero(mask)
            assert shape.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert np.abs(pixels[visible].astype(int) - np.array(COLOURS[shape.colour])).max() <= COLOUR_JITTER + 1
    if shape_range[0] < shape_range[1]:
        assert len(counts) >= 3, counts   # the range is drawn from, not one end of it


def test_scenes_summary_and_format_2(scenes):
    out, summary, manifest, grounding = scenes
    assert set(grounding) == {"format", "captions", "images"} and grounding["format"] == 2
    assert set(grounding["captions"]) == {m["caption_id"] for m in manifest}
    assert set(grounding["images"]) == {f"img{i:05d}" for i in range(SCENE_N)}
    per_image = Counter(len(g["shapes"]) for g in grounding["images"].values())
    assert summary["shapes_per_image"] == {str(c): per_image[c] for c in range(3, 7)}
    named = [len(g["phrases"]) for g in grounding["captions"].values()]
    assert summary["named_per_caption"] == {"1": named.count(1), "2": named.count(2)}
    assert named.count(1) + named.count(2) == len(named) == SCENE_N * K
    assert 0 < summary["named_area_share"] < 1 and 0 < summary["named_shape_share"] < 0.7
    asides = sum(bool(g["nonvisual"]) for g in grounding["captions"].values())
    assert summary["nonvisual_share"] == round(asides / len(named), 4) and 0.25 < asides / len(named) < 0.55
    assert summary["held_out_words"] == HELD_OUT and summary["held_out_occurrences"]["train"] == 0
    assert summary["grounding_format"] == 2 and summary["params"]["preset"] == "scenes"
    assert "held out of every training caption" in (out / "README.md").read_text().lower()


def test_scenes_phrases_point_at_their_shape(scenes):
    out, _, manifest, grounding = scenes
    for m in manifest:
        entry = grounding["captions"][m["caption_id"]]
        assert set(entry) == {"image_id", "phrases", "nonvisual"} and entry["image_id"] == m["image_id"]
        image = grounding["images"][m["image_id"]]
        assert image["size"] == [SCENE_SIZE, SCENE_SIZE]
        text = m["caption"]
        assert 1 <= len(entry["phrases"]) <= 2
        assert len({p["shape_index"] for p in entry["phrases"]}) == len(entry["phrases"])
        for p in entry["phrases"]:
            assert set(p) == {"start", "end", "text", "box", "shape", "colour", "words", "shape_index"}
            assert text[p["start"]:p["end"]] == p["text"]
            shape = image["shapes"][p["shape_index"]]
            assert (shape["box"], shape["shape"], shape["colour"]) == (p["box"], p["shape"], p["colour"])
            for w in p["words"]:
                assert text[w["start"]:w["end"]] == w["text"] and p["start"] <= w["start"] < w["end"] <= p["end"]
                truth = {"colour": shape["colour"], "shape": shape["shape"], "size": shape["size"]}
                assert w["class"] == truth[w["kind"]]
    for i in range(0, SCENE_N, 7):
        # Rendering is the first use of image i's generator, so the scene can be rebuilt exactly.
        _, shapes, masks, areas = render_scenes(np.random.default_rng([SEED, i]), SCENE_SIZE, (3, 6))
        stored = grounding["images"][f"img{i:05d}"]["shapes"]
        assert [s["index"] for s in stored] == list(range(len(shapes)))
        for s, shape, area in zip(stored, shapes, areas):
            assert set(s) == {"index", "box", "shape", "colour", "size", "centre", "area"}
            assert (tuple(s["box"]), s["shape"], s["colour"], s["size"], s["area"]) == (
                shape.box, shape.kind, shape.colour, shape.size, area)
            assert s["box"][0] <= s["centre"][0] < s["box"][2] and s["box"][1] <= s["centre"][1] < s["box"][3]
            assert 0 < s["area"] <= (s["box"][2] - s["box"][0]) * (s["box"][3] - s["box"][1])


def test_nonvisual_spans_name_nothing(scenes):
    _, _, manifest, grounding = scenes
    seen = 0
    for m in manifest:
        entry, text = grounding["captions"][m["caption_id"]], m["caption"]
        for a in entry["nonvisual"]:
            seen += 1
            assert set(a) == {"start", "end", "text"} and text[a["start"]:a["end"]] == a["text"] != ""
            assert all(a["end"] <= p["start"] or p["end"] <= a["start"] for p in entry["phrases"]), text
            assert not any(w in a["text"].lower() for words in (COLOUR_WORDS, SHAPE_WORDS)
                           for ws in words.values() for w in ws)
    assert seen > 0


def test_held_out_synonyms_only_in_val_and_test(scenes):
    _, _, manifest, grounding = scenes
    found = {"train": set(), "eval": set()}
    for m in manifest:
        text = m["caption"].lower()
        split = "train" if m["split"] == "train" else "eval"
        found[split] |= {w for w in HELD if re.search(rf"\b{re.escape(w)}\b", text)}
        for p in grounding["captions"][m["caption_id"]]["phrases"]:
            for w in p["words"]:
                assert w.get("held_out", False) == (w["kind"] != "size" and w["text"].lower() in HELD)
                assert "held_out" not in w or w["held_out"] is True
    assert found["train"] == set()
    assert found["eval"] == HELD   # every held-out word occurs in val or test
    # A training caption still names every class, through the synonyms left to it.
    train_words = {(w["kind"], w["class"]) for m in manifest if m["split"] == "train"
                   for p in grounding["captions"][m["caption_id"]]["phrases"] for w in p["words"]}
    assert {c for k, c in train_words if k == "colour"} == set(COLOURS)


def test_scenes_without_held_out_synonyms_marks_nothing(tmp_path):
    summary = synthesize(tmp_path, images=20, captions_per_image=2, image_size=64, seed=1, val_fraction=0.2,
                         test_fraction=0.2, preset="scenes", shapes=(2, 2), named=(2, 2), nonvisual_fraction=0.0,
                         held_out_synonyms=False)
    grounding = json.loads((tmp_path / "grounding.json").read_text())
    assert summary["held_out_words"] == {} and summary["nonvisual_share"] == 0
    assert summary["shapes_per_image"] == {"2": 20} and summary["named_per_caption"] == {"2": 40}
    for entry in grounding["captions"].values():
        assert entry["nonvisual"] == [] and len(entry["phrases"]) == 2
        assert not any("held_out" in w for p in entry["phrases"] for w in p["words"])


@pytest.mark.parametrize("override, reason", [
    ("data.shapes=[0,2]", "configuration key 'data.shapes': should be greater than or equal to 1"),
    ("data.shapes=[3,7]", "configuration key 'data.shapes': should be less than or equal to 6"),
    ("data.shapes=[4,2]", "shapes = [4, 2] is not a range"),
    ("data.shapes=4", "configuration key 'data.shapes': should be a valid list"),
    ("data.named=[3,1]", "configuration key 'data.named': should be less than or equal to 2"),
    ("data.named=[2,1]", "named = [2, 1] is not a range"),
    ("data.preset=hard", "configuration key 'data.preset': should be 'scenes' or 'simple'"),
    ("data.nonvisual_fraction=1.5", "configuration key 'data.nonvisual_fraction': should be less than or equal to 1"),
    ("data.held_out_synonyms=2", "configuration key 'data.held_out_synonyms': should be a valid boolean"),
])
def test_schema_refuses_bad_scene_knobs(override, reason):
    with pytest.raises(ConfigError) as caught:
        resolve(None, [override])
    assert reason in str(caught.value)


def test_schema_refuses_captions_naming_more_shapes_than_an_image_has():
    with pytest.raises(ConfigError, match="named's max must be at most shapes' min"):
        resolve(None, ["data.shapes=[1,4]", "data.named=[1,2]"])
    assert resolve(None, ["data.shapes=[2,4]", "data.named=[2,2]"])["data"]["named"] == [2, 2]
