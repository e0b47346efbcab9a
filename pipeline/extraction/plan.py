"""The shard plan: what a split's cache will hold, decided before any shard is written.

Items (captions or unique images) are sorted by id and cut into contiguous runs of `shard_size`;
shard i goes to rank i % world (clip-retrieval's `index % count`), so any worker can take any shard
and the shards' contents never depend on how many workers there were.

The plan records the split's fingerprint (pipeline/cache/fingerprint.py), everything that determines the bytes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from pipeline.cache.format import FORMAT_VERSION, shard_path
from pipeline.encoders import Tokens
from pipeline.errors import ConfigError, DataError
from pipeline.records import CaptionRecord, unique_images


@dataclass
class TextItem:
    """One pre-tokenised text: a caption, a GLUE sentence pair, a SQuAD window. `image_id` may be ""."""
    item_id: str
    image_id: str
    tokens: Tokens


@dataclass(frozen=True)
class ImageItem:
    image_id: str
    path: str  # as the captions file gives it (relative to the images root unless absolute)


# ----------------------------------------------------------------------------- shards

def shard_ranges(n_items: int, shard_size: int) -> list[tuple[int, int]]:
    if shard_size < 1:
        raise ConfigError(f"shard_size must be positive, got {shard_size}")
    return [(start, min(start + shard_size, n_items)) for start in range(0, n_items, shard_size)]


def parse_shards(text: str | None) -> list[int] | None:
    """'0,3,5-7' -> [0, 3, 5, 6, 7]; None or '' -> None (all shards)."""
    if not text:
        return None
    out = set()
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise ConfigError(f"--shards wants indices like 0,3,5-7; got {text!r}") from None
    if any(i < 0 for i in out):
        raise ConfigError(f"--shards indices must be >= 0, got {text!r}")
    return sorted(out)


def my_shards(num_shards: int, rank: int, world: int, subset: list[int] | None) -> list[int]:
    return [i for i in range(num_shards) if i % world == rank and (subset is None or i in subset)]


def make_plan(fingerprint: dict, text_ids: list[str] | None, image_ids: list[str] | None,
              shard_size: int) -> dict:
    """plan.json: the fingerprint and, per modality, each shard's file, item count and id range.
    Ids must already be sorted; the same inputs give the same plan on every rank."""
    shards = {}
    for modality, ids in (("text", text_ids), ("image", image_ids)):
        if ids is None:
            continue
        shards[modality] = [{"file": shard_path(".", modality, i).as_posix().removeprefix("./"),
                             "items": stop - start, "first_id": ids[start], "last_id": ids[stop - 1]}
                            for i, (start, stop) in enumerate(shard_ranges(len(ids), shard_size))]
    return {"format_version": FORMAT_VERSION, "fingerprint": fingerprint, "shards": shards}


# ----------------------------------------------------------------------------- items

def check_unique(ids: list[str], what: str) -> None:
    seen = set()
    for i in ids:
        if i in seen:
            raise DataError(f"duplicate {what} id {i!r}; ids must be unique", item=i)
        seen.add(i)


def caption_items(records: list[CaptionRecord], encoder, chunk: int = 4096) -> list[TextItem]:
    """The thin adapter from captions to pre-tokenised items, sorted by caption id."""
    records = sorted(records, key=lambda r: r.caption_id)
    check_unique([r.caption_id for r in records], "caption")
    items = []
    for start in range(0, len(records), chunk):  # bounded tokenizer batches for million-caption splits
        part = records[start:start + chunk]
        items += [TextItem(r.caption_id, r.image_id, t) for r, t in zip(part, encoder.tokenize([r.text for r in part]))]
    return items


def image_items(records: list[CaptionRecord]) -> list[ImageItem]:
    return [ImageItem(i, p) for i, p in unique_images(records)]


# ----------------------------------------------------------------------------- fingerprint

def _rows_sha256(rows) -> str:
    """sha256 over rows in order, one canonical JSON line each: no giant string for a million rows."""
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    return h.hexdigest()


def split_digest(records: list[CaptionRecord]) -> dict:
    """A digest of the split's ids: (caption id, text, image id) per caption, (image id, path) per image."""
    caps = sorted((r.caption_id, r.text, r.image_id) for r in records)
    imgs = unique_images(records)
    return {"captions": len(caps), "images": len(imgs), "captions_sha256": _rows_sha256(caps),
            "images_sha256": _rows_sha256(imgs)}


def items_digest(items: list[TextItem]) -> dict:
    """The same for pre-tokenised items: ids, image ids, the token ids and segment ids themselves."""
    rows = sorted(items, key=lambda it: it.item_id)

    def row(it):
        types = it.tokens.type_ids
        base = (it.item_id, it.image_id, it.tokens.ids.tolist())
        # Segment ids change the states; a caption (no segments) keeps its pre-existing digest.
        return base if types is None or not np.any(types) else base + (np.asarray(types).tolist(),)
    return {"items": len(rows), "items_sha256": _rows_sha256(row(it) for it in rows)}
