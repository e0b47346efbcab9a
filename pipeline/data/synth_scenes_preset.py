"""The scenes preset of the synthetic dataset: each image's captions and ground truth, and what the whole
dataset's captions leave out (the share of shapes and of shape area they name, the asides, the held-out
synonyms), for summary.json and the dataset's README.

What it measures is what makes the preset hard: a caption names one or two of 3-6 shapes, so most of an
image's regions go unnamed, and some of a caption's words name no region at all.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from pipeline.data.synth_captions import HELD_OUT, make_scene_captions, scene_vocab
from pipeline.data.synth_scene import Shape, overlapping_pairs, render_scenes

NAMED_MAX = 2   # a caption names one shape, or two side by side or related; none lists the scene


@dataclass
class Scenes:
    shapes: tuple[int, int]          # shapes per image, inclusive
    named: tuple[int, int]           # shapes a caption names, inclusive
    nonvisual_fraction: float
    held_out_synonyms: bool
    shapes_per_image: Counter = field(default_factory=Counter)
    named_per_caption: Counter = field(default_factory=Counter)
    shape_share: float = 0.0         # sums over captions, divided by their count in summary()
    area_share: float = 0.0
    with_aside: int = 0
    held_out_seen: Counter = field(default_factory=Counter)   # held-out word occurrences per split

    def image(self, rng: np.random.Generator, size: int, count: int, split: str
              ) -> tuple[Image.Image, list[Shape], list[tuple[str, dict]], dict]:
        """One image: the picture, its shapes, [(caption, its grounding entry)] and the image's entry in
        grounding.json's "images"."""
        image, drawn, masks, areas = render_scenes(rng, size, self.shapes)
        vocab = scene_vocab(self.held_out_synonyms, training=split == "train")
        captions = make_scene_captions(rng, drawn, size, count, overlapping_pairs(masks), self.named,
                                       self.nonvisual_fraction, vocab)
        entry = {"size": [size, size],
                 "shapes": [{"index": k, "box": list(s.box), "shape": s.kind, "colour": s.colour, "size": s.size,
                             "centre": [round(s.cx, 3), round(s.cy, 3)], "area": areas[k]}
                            for k, s in enumerate(drawn)]}
        self.shapes_per_image[len(drawn)] += 1
        total_area = sum(areas)
        for _, phrases, asides in captions:
            named = {p["shape_index"] for p in phrases}
            self.named_per_caption[len(named)] += 1
            self.shape_share += len(named) / len(drawn)
            self.area_share += sum(areas[k] for k in named) / total_area
            self.with_aside += bool(asides)
            self.held_out_seen[split] += sum(bool(w.get("held_out")) for p in phrases for w in p["words"])
        entries = [(text, {"phrases": phrases, "nonvisual": asides}) for text, phrases, asides in captions]
        return image, drawn, entries, entry

    def summary(self, base: dict) -> dict:
        """The simple preset's summary, with what the captions leave out and the scene knobs added."""
        n = max(1, sum(self.named_per_caption.values()))
        params = {"preset": "scenes", **base["params"], "shapes": list(self.shapes), "named": list(self.named),
                  "nonvisual_fraction": self.nonvisual_fraction, "held_out_synonyms": self.held_out_synonyms}
        extra = {
            "grounding_format": 2,
            "shapes_per_image": {str(c): self.shapes_per_image[c] for c in range(self.shapes[0], self.shapes[1] + 1)},
            "named_per_caption": {str(c): self.named_per_caption[c] for c in range(self.named[0], self.named[1] + 1)},
            "named_shape_share": round(self.shape_share / n, 4),
            "named_area_share": round(self.area_share / n, 4),
            "nonvisual_share": round(self.with_aside / n, 4),
            "held_out_words": HELD_OUT if self.held_out_synonyms else {},
            "held_out_occurrences": {s: self.held_out_seen[s] for s in base["splits"]},
        }
        return {**{k: v for k, v in base.items() if k != "params"}, **extra, "params": params}


def scenes_readme(summary: dict) -> str:
    p = summary["params"]
    rows = "\n".join(f"| {s} | {c['images']} | {c['captions']} |" for s, c in summary["splits"].items())
    per_image = ", ".join(f"{k}: {v}" for k, v in summary["shapes_per_image"].items())
    per_caption = ", ".join(f"{k}: {v}" for k, v in summary["named_per_caption"].items())
    held = summary["held_out_words"]
    held_text = ("none (data.held_out_synonyms is false)" if not held else
                 "; ".join(f"{kind}: " + ", ".join(f"{w} ({c})" for c, w in words.items())
                           for kind, words in held.items()))
    return f"""# Synthetic grounded captions, scenes preset (generated; do not edit)

Made by `groundedbert data synth` with seed {p['seed']}: {summary['images']} images of {p['image_size']} px,
{p['captions_per_image']} captions each. Each image holds {p['shapes'][0]}-{p['shapes'][1]} shapes
({', '.join(summary['shapes'])}), no colour and no kind twice, so each colour word and each shape word names
one shape. Every image has the same low-contrast background, which no caption mentions. Each caption names
{p['named'][0]}-{p['named'][1]} of the shapes (by colour, size and kind, with synonyms; two shapes side by side
or in a relation computed from their positions) and leaves the rest out.

- Shapes per image: {per_image}.
- Shapes named per caption: {per_caption}. A caption names on average {summary['named_shape_share']:.1%} of
  its image's shapes and {summary['named_area_share']:.1%} of their visible area.
- {summary['nonvisual_share']:.1%} of the captions carry words that name no region ("in this picture", "I think",
  "nicely drawn").
- Held out of every training caption, used in val and test: {held_text}.

- `{summary['manifest']}`: JSONL manifest (`image`, `caption`, `split`, `caption_id`, `image_id`).
- `images/`: PNG images; manifest paths are relative to this folder.
- `{summary['grounding']}` (format 2): `captions` maps each caption id to its `image_id`, its `phrases` (character
  span `[start, end)`, text, box `[x0, y0, x1, y1]` in pixels with x1, y1 exclusive, `shape_index`, and the
  colour, shape and size `words`, a held-out synonym marked `"held_out": true`) and its `nonvisual` spans;
  `images` maps each image id to its `size` and all its `shapes` (`index`, `box`, `shape`, `colour`, `size`,
  `centre`, visible `area` in pixels), named or not.

| split | images | captions |
|---|---|---|
{rows}
"""
