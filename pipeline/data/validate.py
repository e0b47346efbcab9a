"""Checks every caption format shares, applied as records are collected from one file.

Each bad item becomes a DataError naming the file, the item and the reason, and goes through the
BadItems policy: 'fail' raises at the first, 'skip' lists it and the item is left out.
"""
from __future__ import annotations

from pipeline.errors import BadItems, DataError
from pipeline.records import CaptionRecord


def as_id(value) -> str | None:
    """Ids are strings everywhere; integers (COCO, Karpathy) become their decimal strings."""
    if isinstance(value, bool):  # bool is an int subclass; True as an id is surely a mistake
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    return None


def missing_keys(obj, keys: tuple[str, ...]) -> str | None:
    """The reason an entry is unusable for lack of keys, or None when it has them all."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    missing = [k for k in keys if k not in obj]
    if missing:
        return "missing required key" + ("s " if len(missing) > 1 else " ") + ", ".join(repr(k) for k in missing)
    return None


def undecodable(text: str) -> str | None:
    """Why `text` is not valid UTF-8, or None. Files read under the 'skip' policy are decoded with
    surrogateescape, so bad bytes survive as lone surrogates and are caught here, caption by caption."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as e:
        raw = text[e.start:e.end].encode("utf-8", errors="surrogateescape")
        return f"caption is not valid UTF-8 (bytes {raw!r} at character {e.start})"


class Collector:
    """Accumulates one file's records, rejecting bad items through the policy."""

    def __init__(self, file: str, policy: BadItems):
        self.file, self.policy = file, policy
        self.records: list[CaptionRecord] = []
        self._first_seen: dict[str, str] = {}  # caption id -> item where it first appeared
        self._image_paths: dict[str, str] = {}

    def bad(self, reason: str, item: str) -> None:
        self.policy.handle(DataError(reason, self.file, item))

    def add(self, item: str, caption_id, text, image_id, image_path, split) -> None:
        cid = as_id(caption_id)
        if cid is None:
            return self.bad(f"caption id must be a non-empty string or an integer, got {caption_id!r}", item)
        # Register the id before the other checks: a duplicate is a duplicate even if the first copy was bad.
        if cid in self._first_seen:
            return self.bad(f"duplicate caption id {cid!r} (first seen at {self._first_seen[cid]})", item)
        self._first_seen[cid] = item
        if not isinstance(text, str):
            return self.bad(f"caption must be a string, got {type(text).__name__}", item)
        reason = undecodable(text)
        if reason:
            return self.bad(reason, item)
        if not text.strip():
            return self.bad("empty or whitespace-only caption", item)
        iid = as_id(image_id)
        if iid is None:
            return self.bad(f"image id must be a non-empty string or an integer, got {image_id!r}", item)
        if not isinstance(image_path, str) or not image_path.strip():
            return self.bad(f"image path must be a non-empty string, got {image_path!r}", item)
        known = self._image_paths.setdefault(iid, image_path)
        if known != image_path:
            return self.bad(f"image id {iid!r} already names {known!r}, here {image_path!r}", item)
        if not isinstance(split, str) or not split.strip():
            return self.bad(f"split must be a non-empty string, got {split!r}", item)
        # Surrounding whitespace (COCO has trailing newlines) carries nothing and would only
        # shift token positions; inner text is kept exactly.
        self.records.append(CaptionRecord(cid, text.strip(), iid, image_path, split))
