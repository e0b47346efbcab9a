"""A JSONL manifest, one object per line: {"image": path, "caption": text, "split": name}, optional
"caption_id" (default: the line number) and "image_id" (default: the image path); "split" defaults
to "train". Each line is decoded and parsed on its own, so one bad line is one bad item."""
from __future__ import annotations

import json

from pipeline.data.validate import Collector, missing_keys


def parse_jsonl(data: bytes, c: Collector) -> None:
    for n, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        if n == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark some editors write
        if not raw.strip():
            continue
        item = f"line {n}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            c.bad(f"invalid UTF-8: byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line ({e.reason})",
                  f"line {n}, column {e.start + 1}")
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            c.bad(f"malformed JSON: {e.msg} (column {e.colno})", f"line {n}, column {e.colno}")
            continue
        reason = missing_keys(obj, ("image", "caption"))
        if reason:
            c.bad(reason, item)
            continue
        cid = obj.get("caption_id", str(n))
        c.add(f"{item} (caption id {cid})", cid, obj["caption"], obj.get("image_id", obj["image"]),
              obj["image"], obj.get("split", "train"))
