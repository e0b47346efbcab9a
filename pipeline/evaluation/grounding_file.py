"""grounding.json, both forms, read into one object.

Format 2 (the synthetic generator's default) keys captions and images apart:
    {"format": 2, "captions": {cid: {"image_id", "phrases": [...], "nonvisual": [{start, end, text}]}},
     "images": {image_id: {"size": [w, h], "shapes": [{"index", "box", "shape", "colour", "size",
                                                       "centre", "area"}]}}}
so every shape of an image is known, named in the caption or not. The older flat form
{cid: [phrases]} (preset `simple`, and grounding files made from region annotations) knows only the
named phrases: what needs every shape of the image (the object priors, mass on unnamed shapes) is then
undefined, and evaluation reports it as null with a reason.

Malformed input is one ConfigError naming the file, the caption (or image) and the reason.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.io.jsonio import read_json

FLAT, SHAPES = 1, 2   # the two formats: named phrases only, and phrases with every shape of the image


@dataclass
class GroundingFile:
    source: str                                           # the file (or "<in memory>"), named in errors
    format: int
    phrases: dict[str, list[dict]]                        # caption id -> phrases [{start, end, box, words?}]
    image_of: dict[str, str] = field(default_factory=dict)          # caption id -> image id (format 2)
    images: dict[str, list[dict]] = field(default_factory=dict)     # image id -> shapes (format 2)
    nonvisual: dict[str, list[dict]] = field(default_factory=dict)  # caption id -> [{start, end, text}]

    @property
    def knows_shapes(self) -> bool:
        """Whether every shape of each image is known (format 2), not only the named ones."""
        return self.format == SHAPES

    def get(self, caption_id: str, default=None):
        """The caption's phrases (a dict's get, so code that held the flat dict reads the same)."""
        return self.phrases.get(caption_id, default)

    def __getitem__(self, caption_id: str) -> list[dict]:
        return self.phrases[caption_id]

    def __contains__(self, caption_id: str) -> bool:
        return caption_id in self.phrases

    def shapes(self, caption_id: str) -> list[dict] | None:
        """Every shape of the caption's image [{box, centre, area, ...}]; None where the file does not say."""
        image = self.image_of.get(caption_id)
        return None if image is None else self.images.get(image)

    def nonvisual_spans(self, caption_id: str) -> list[dict] | None:
        """The caption's non-visual spans ("in this picture"); None where the file does not mark them."""
        return self.nonvisual.get(caption_id) if self.knows_shapes else None


def load_grounding(path: Path) -> GroundingFile:
    """grounding.json in either form; a missing or malformed file is the user's to fix."""
    return parse_grounding(read_json(path, ConfigError), str(path))


def as_grounding(grounding) -> GroundingFile | None:
    """A GroundingFile from one, from the parsed JSON of either form, or None."""
    if grounding is None or isinstance(grounding, GroundingFile):
        return grounding
    return parse_grounding(grounding, "<in memory>")


def parse_grounding(data, source: str) -> GroundingFile:
    if not isinstance(data, dict):
        raise ConfigError(f"file {source}: a grounding file is a JSON object, got {type(data).__name__}")
    if "format" not in data:
        return GroundingFile(source, FLAT, {str(cid): _phrases(phrases, source, cid) for cid, phrases in data.items()})
    if data["format"] != SHAPES:
        raise ConfigError(f"file {source}: grounding format {data['format']!r} is not known (1: the flat "
                          f"form without a \"format\" key; 2: captions and images)")
    for key in ("captions", "images"):
        if not isinstance(data.get(key), dict):
            raise ConfigError(f"file {source}: format 2 needs an object \"{key}\"")
    images = {str(iid): _shapes(image, source, iid) for iid, image in data["images"].items()}
    out = GroundingFile(source, SHAPES, {}, images=images)
    for cid, caption in data["captions"].items():
        cid = str(cid)
        if not isinstance(caption, dict):
            raise ConfigError(f"file {source}: caption {cid}: an entry is an object with \"image_id\" and "
                              f"\"phrases\", got {type(caption).__name__}")
        image = caption.get("image_id")
        if image not in images:
            raise ConfigError(f"file {source}: caption {cid}: image_id {image!r} is not in \"images\"")
        phrases = _phrases(caption.get("phrases"), source, cid)
        indices = {shape.get("index", j) for j, shape in enumerate(images[image])}
        for k, phrase in enumerate(phrases):
            index = phrase.get("shape_index")
            if index is not None and index not in indices:
                raise ConfigError(f"file {source}: caption {cid}: phrase {k}: shape_index {index!r} is not the "
                                  f"index of a shape of image {image}")
        out.phrases[cid], out.image_of[cid] = phrases, str(image)
        out.nonvisual[cid] = [_span(span, source, cid, f"nonvisual span {k}")
                              for k, span in enumerate(_list(caption.get("nonvisual", []), source, cid, "nonvisual"))]
    return out


def _list(value, source: str, cid, what: str) -> list:
    if not isinstance(value, list):
        raise ConfigError(f"file {source}: caption {cid}: {what} must be a list, got {type(value).__name__}")
    return value


def _span(item, source: str, cid, what: str) -> dict:
    if not isinstance(item, dict):
        raise ConfigError(f"file {source}: caption {cid}: {what} must be an object, got {type(item).__name__}")
    start, end = item.get("start"), item.get("end")
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end):
        raise ConfigError(f"file {source}: caption {cid}: {what} needs integer \"start\" < \"end\" (characters, "
                          f"end exclusive), got {start!r}, {end!r}")
    return item


def _box(box, source: str, where: str) -> list[float]:
    ok = isinstance(box, list) and len(box) == 4 and all(
        isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in box)
    if not ok or not (box[0] < box[2] and box[1] < box[3]):
        raise ConfigError(f"file {source}: {where}: box must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1, got {box!r}")
    return [float(c) for c in box]


def _phrases(phrases, source: str, cid) -> list[dict]:
    for k, phrase in enumerate(_list(phrases, source, cid, "phrases")):
        _span(phrase, source, cid, f"phrase {k}")
        _box(phrase.get("box"), source, f"caption {cid}: phrase {k}")
        for j, word in enumerate(_list(phrase.get("words", []), source, cid, f"phrase {k}'s words")):
            _span(word, source, cid, f"phrase {k}: word {j}")
            if "kind" not in word:
                raise ConfigError(f"file {source}: caption {cid}: phrase {k}: word {j} has no \"kind\"")
    return phrases


def _shapes(image, source: str, iid) -> list[dict]:
    if not isinstance(image, dict) or not isinstance(image.get("shapes"), list):
        raise ConfigError(f"file {source}: image {iid}: an entry is an object with a list \"shapes\"")
    shapes = []
    for k, shape in enumerate(image["shapes"]):
        where = f"image {iid}: shape {k}"
        if not isinstance(shape, dict):
            raise ConfigError(f"file {source}: {where}: must be an object, got {type(shape).__name__}")
        box = _box(shape.get("box"), source, where)
        centre = shape.get("centre", [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
        if not (isinstance(centre, list) and len(centre) == 2 and all(isinstance(c, (int, float)) for c in centre)):
            raise ConfigError(f"file {source}: {where}: centre must be [cx, cy], got {centre!r}")
        area = shape.get("area", (box[2] - box[0]) * (box[3] - box[1]))
        if not isinstance(area, (int, float)) or not area >= 0:
            raise ConfigError(f"file {source}: {where}: area must be a number >= 0 (visible pixels), got {area!r}")
        shapes.append(dict(shape, box=box, centre=[float(c) for c in centre], area=float(area)))
    return shapes
