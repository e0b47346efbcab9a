"""COCO captions JSON (the official `captions_*.json`): `images[].id/file_name`,
`annotations[].id/image_id/caption`. The file holds no split; every record gets the name asked for."""
from __future__ import annotations

from pipeline.data.validate import Collector, as_id, missing_keys
from pipeline.errors import DataError


def parse_coco(obj: dict, c: Collector, split: str) -> None:
    for key in ("images", "annotations"):
        if not isinstance(obj.get(key), list):
            raise DataError(f"COCO captions file needs a list under {key!r}", c.file)

    paths: dict[str, str] = {}
    for k, im in enumerate(obj["images"]):
        item = f"images[{k}]"
        reason = missing_keys(im, ("id", "file_name"))
        if reason:
            c.bad(reason, item)
            continue
        iid = as_id(im["id"])
        if iid is None:
            c.bad(f"image id must be a non-empty string or an integer, got {im['id']!r}", item)
        elif iid in paths:
            c.bad(f"duplicate image id {iid!r}", item)
        else:
            paths[iid] = im["file_name"]

    for k, ann in enumerate(obj["annotations"]):
        item = f"annotations[{k}]"
        reason = missing_keys(ann, ("id", "image_id", "caption"))
        if reason:
            c.bad(reason, item)
            continue
        item += f" (caption id {ann['id']})"
        iid = as_id(ann["image_id"])
        if iid not in paths:
            c.bad(f"caption names unknown image id {ann['image_id']!r} (not in 'images', or skipped there)", item)
            continue
        c.add(item, ann["id"], ann["caption"], iid, paths[iid], split)
