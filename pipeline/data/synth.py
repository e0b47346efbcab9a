"""The embedded default dataset: coloured shapes with templated captions and word-to-box ground truth.

    OUT/captions.jsonl   the JSONL manifest (image, caption, split, caption_id, image_id), read by load_split
    OUT/images/*.png     the images (paths in the manifest are relative to OUT)
    OUT/grounding.json   which words name which box (format below, docs/data.md)
    OUT/summary.json     counts per split and the parameters that made it; OUT/README.md says the same

Two presets. `scenes` (the default): 3-6 shapes of distinct colours and kinds on one background every
image shares; each caption names only one or two of them, some captions carry words that name nothing
("in this picture"), and one synonym per colour and per shape appears only in val and test captions.
grounding.json is format 2: {"format": 2, "captions": {id: {image_id, phrases, nonvisual}}, "images":
{id: {size, shapes}}}. `simple`: 1-3 shapes on varied backgrounds, captions that may list every shape,
grounding.json as {caption id: [{start, end, text, box, shape, colour, words}]}; for the same parameters
its files stay byte-identical (tests/test_data_synth.py pins their hash).

Every image draws from its own generator seeded by (seed, index), so the bytes of image i do not
depend on how many images come before it, and the same seed always gives byte-identical files
(PNG written without timestamps, JSON with fixed key order). Splits are by image.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from pipeline.data.synth_captions import make_captions
from pipeline.data.synth_scene import MAX_SHAPES, overlapping_pairs, render_scene
from pipeline.data.synth_scenes_preset import NAMED_MAX, Scenes, scenes_readme
from pipeline.errors import ConfigError

SPLITS = ("train", "val", "test")
MANIFEST, GROUNDING, SUMMARY = "captions.jsonl", "grounding.json", "summary.json"
_SPLIT_STREAM = 7919  # a second seed component, so the split shuffle is its own random stream


def synthesize(out_dir: Path, images: int, captions_per_image: int, image_size: int, seed: int,
               val_fraction: float, test_fraction: float, preset: str = "scenes",
               shapes: tuple[int, int] = (3, 6), named: tuple[int, int] = (1, 2),
               nonvisual_fraction: float = 0.4, held_out_synonyms: bool = True) -> dict:
    """Write the dataset under `out_dir` and return its summary. `shapes`, `named`, `nonvisual_fraction`
    and `held_out_synonyms` shape the scenes preset; the simple preset ignores them."""
    _check(images, captions_per_image, image_size, seed, val_fraction, test_fraction)
    scenes = _check_preset(preset, shapes, named, nonvisual_fraction, held_out_synonyms)
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    split_of = assign_splits(images, val_fraction, test_fraction, seed)

    lines = []
    grounding = {} if scenes is None else {"format": 2, "captions": {}, "images": {}}
    counts = {s: Counter() for s in SPLITS}
    shapes_seen, colours_seen = Counter(), Counter()
    for i in range(images):
        rng = np.random.default_rng([seed, i])
        image_id, rel_path = f"img{i:05d}", f"images/img{i:05d}.png"
        split = split_of[i]
        if scenes is None:
            image, drawn, bg, masks = render_scene(rng, image_size)
            captions = make_captions(rng, drawn, bg, image_size, captions_per_image, overlapping_pairs(masks))
        else:
            image, drawn, captions, grounding["images"][image_id] = scenes.image(rng, image_size,
                                                                                captions_per_image, split)
            captions = [(text, {"image_id": image_id, **entry}) for text, entry in captions]
        _atomic(out_dir / rel_path, lambda tmp: image.save(tmp, format="PNG", compress_level=6))
        counts[split]["images"] += 1
        counts[split]["captions"] += len(captions)
        shapes_seen.update(s.kind for s in drawn)
        colours_seen.update(s.colour for s in drawn)
        for k, (text, entry) in enumerate(captions):
            caption_id = f"{image_id}_{k}"
            lines.append(json.dumps({"caption_id": caption_id, "image_id": image_id, "image": rel_path,
                                     "caption": text, "split": split}, ensure_ascii=False))
            (grounding if scenes is None else grounding["captions"])[caption_id] = entry
    _remove_stale_images(out_dir / "images", images)

    summary = {
        "format": "jsonl", "manifest": MANIFEST, "grounding": GROUNDING,
        "images": images, "captions": len(lines),
        "splits": {s: {"images": counts[s]["images"], "captions": counts[s]["captions"]} for s in SPLITS},
        "shapes": dict(sorted(shapes_seen.items())), "colours": dict(sorted(colours_seen.items())),
        "params": {"images": images, "captions_per_image": captions_per_image, "image_size": image_size,
                   "seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction},
    }
    if scenes is not None:
        summary = scenes.summary(summary)
    _write_text(out_dir / GROUNDING, json.dumps(grounding, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    _write_text(out_dir / SUMMARY, json.dumps(summary, indent=2) + "\n")
    _write_text(out_dir / "README.md", _readme(summary) if scenes is None else scenes_readme(summary))
    # The manifest goes last: a run killed half way leaves no manifest promising files it never wrote.
    _write_text(out_dir / MANIFEST, "\n".join(lines) + "\n")
    return summary


def assign_splits(images: int, val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """A split name per image index; a non-zero fraction gets at least one image when there are enough."""
    def share(fraction):
        n = int(round(images * fraction))
        return max(n, 1) if fraction > 0 and images >= 3 else n
    n_val, n_test = share(val_fraction), share(test_fraction)
    order = np.random.default_rng([seed, _SPLIT_STREAM]).permutation(images)
    split_of = ["train"] * images
    for rank, index in enumerate(order):
        if rank < n_test:
            split_of[index] = "test"
        elif rank < n_test + n_val:
            split_of[index] = "val"
    return split_of


def _check(images, captions_per_image, image_size, seed, val_fraction, test_fraction) -> None:
    if seed < 0:
        raise ConfigError(f"data.seed must be a non-negative integer, got {seed}")
    if images < 1:
        raise ConfigError(f"data.images must be at least 1, got {images}")
    if captions_per_image < 1:
        raise ConfigError(f"data.captions_per_image must be at least 1, got {captions_per_image}")
    if image_size < 32:
        raise ConfigError(f"data.image_size must be at least 32 pixels (shapes need room), got {image_size}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(f"data.val_fraction and data.test_fraction must be in [0, 1) and leave some "
                          f"training images, got {val_fraction} and {test_fraction}")


def _check_preset(preset, shapes, named, nonvisual_fraction, held_out_synonyms) -> Scenes | None:
    """The scenes preset's generator, or None for the simple preset (which ignores the scene knobs)."""
    if preset == "simple":
        return None
    if preset != "scenes":
        raise ConfigError(f"data.preset must be scenes or simple, got {preset!r}")
    shapes, named = _range("data.shapes", shapes), _range("data.named", named)
    if not 1 <= shapes[0] <= shapes[1] <= MAX_SHAPES:
        raise ConfigError(f"data.shapes must be [min, max] with 1 <= min <= max <= {MAX_SHAPES} (a scene has "
                          f"{MAX_SHAPES} shape kinds, each used once), got {list(shapes)}")
    if not 1 <= named[0] <= named[1] <= min(NAMED_MAX, shapes[0]):
        raise ConfigError(f"data.named must be [min, max] with 1 <= min <= max <= {NAMED_MAX} and max no more "
                          f"than data.shapes' min ({shapes[0]}), so every image has the shapes a caption names; "
                          f"got {list(named)}")
    if not 0 <= nonvisual_fraction <= 1:
        raise ConfigError(f"data.nonvisual_fraction must be in [0, 1], got {nonvisual_fraction}")
    return Scenes(shapes, named, float(nonvisual_fraction), bool(held_out_synonyms))


def _range(key: str, value) -> tuple[int, int]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise ConfigError(f"{key} must be two integers [min, max], got {value!r}")
    return int(value[0]), int(value[1])


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: a file under its final name is whole."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_text(path: Path, text: str) -> None:
    _atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _remove_stale_images(folder: Path, images: int) -> None:
    """A rerun with fewer images into the same folder must not leave the old extra files behind."""
    for path in folder.glob("img*.png"):
        stem = path.stem[3:]
        if stem.isdigit() and int(stem) >= images:
            path.unlink()


def _readme(summary: dict) -> str:
    p = summary["params"]
    rows = "\n".join(f"| {s} | {c['images']} | {c['captions']} |" for s, c in summary["splits"].items())
    return f"""# Synthetic grounded captions (generated; do not edit)

Made by `groundedbert data synth` with seed {p['seed']}: {summary['images']} images of
{p['image_size']} px, {p['captions_per_image']} captions each. Coloured shapes ({', '.join(summary['shapes'])})
on gradient, striped, noisy or plain backgrounds; captions name shapes by colour, size and kind with
synonyms, relations between shapes computed from their positions, and lists with counts.

- `{summary['manifest']}`: JSONL manifest (`image`, `caption`, `split`, `caption_id`, `image_id`).
- `images/`: PNG images; manifest paths are relative to this folder.
- `{summary['grounding']}`: for each caption id, the phrases that name a shape: character span
  `[start, end)`, the text, and the shape's box `[x0, y0, x1, y1]` in pixels (x1, y1 exclusive).

| split | images | captions |
|---|---|---|
{rows}
"""
