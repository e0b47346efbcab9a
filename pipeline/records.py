"""The one internal record type every caption loader produces.

A split is a list of `CaptionRecord`s; ids are strings whatever the source format used
(COCO's integer ids become their decimal strings) so that every format sorts and hashes alike.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CaptionRecord:
    caption_id: str
    text: str
    image_id: str
    image_path: str  # as the source gives it, relative to the images root unless absolute
    split: str = "train"


def unique_images(records: list[CaptionRecord]) -> list[tuple[str, str]]:
    """(image_id, image_path) of every image the records name, once each, sorted by id.

    Each unique image is encoded once however many captions it has."""
    seen: dict[str, str] = {}
    for r in records:
        seen.setdefault(r.image_id, r.image_path)
    return sorted(seen.items())
