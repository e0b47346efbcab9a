"""`load_split`: any supported caption file -> a list of CaptionRecords, the format detected from
the file itself (COCO captions JSON, Karpathy split JSON, JSONL manifest).

Whole-file problems (unreadable, malformed JSON, unknown schema, an empty split) always raise;
per-caption problems go through the BadItems policy. Image files are not opened here: extraction
decodes them anyway and reports a missing or broken one through the same policy.
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.data.coco import parse_coco
from pipeline.data.jsonl import parse_jsonl
from pipeline.data.karpathy import parse_karpathy
from pipeline.data.validate import Collector
from pipeline.errors import BadItems, DataError
from pipeline.records import CaptionRecord


def load_split(captions_file: Path, images_root: Path, split: str | None = None,
               policy: BadItems | None = None) -> list[CaptionRecord]:
    """Every usable caption of `split` (all splits when None), in file order."""
    captions_file, policy = Path(captions_file), policy or BadItems("fail")
    file = str(captions_file)
    if not captions_file.is_file():
        raise DataError("captions file not found", file)
    data = captions_file.read_bytes()
    fmt = detect_format(captions_file, data)
    c = Collector(file, policy)
    if fmt == "jsonl":
        parse_jsonl(data, c)
    else:
        obj = parse_json(data, file, policy)
        fmt = json_format(obj, file)
        if fmt == "coco":
            parse_coco(obj, c, split or "train")
        elif fmt == "karpathy":
            parse_karpathy(obj, c)
        else:  # a single-line JSONL manifest parses as one JSON object
            parse_jsonl(data, c)

    records = c.records if split is None else [r for r in c.records if r.split == split]
    if not records:
        skipped = f" ({len(policy.skipped)} bad items skipped)" if policy.skipped else ""
        if split is None:
            raise DataError(f"no usable captions in the file{skipped}", file)
        have = sorted({r.split for r in c.records})
        raise DataError(f"split {split!r} has no records{skipped}; the file has "
                        + (f"splits: {', '.join(have)}" if have else "no usable records"), file)
    if any(not Path(r.image_path).is_absolute() for r in records) and not Path(images_root).is_dir():
        raise DataError("images folder not found (image paths in the captions file are relative to it)",
                        str(images_root))
    return records


def detect_format(path: Path, data: bytes) -> str | None:
    """'jsonl' from the name or the first lines; None means "a JSON document, look at its keys"."""
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return "jsonl"
    lines = [ln for ln in data.removeprefix(b"\xef\xbb\xbf").split(b"\n", 6)[:6] if ln.strip()]
    if len(lines) < 2:  # one line (a COCO file is often one long line) is parsed as JSON below
        return None
    # Several lines: a manifest if any of the first few is a manifest object on its own, so one
    # malformed first line is still a bad item of a JSONL file, not a malformed JSON document.
    # Both keys are asked for: a COCO annotation has "caption" but "image_id", never "image".
    for line in lines[:5]:
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(obj, dict) and "caption" in obj and "image" in obj:
            return "jsonl"
    return None


def json_format(obj, file: str) -> str:
    if isinstance(obj, dict):
        if "annotations" in obj:
            return "coco"
        images = obj.get("images")
        if isinstance(images, list) and ("dataset" in obj or not images or
                                         (isinstance(images[0], dict) and "sentences" in images[0])):
            return "karpathy"
        if "caption" in obj and "image" in obj:
            return "jsonl"
    raise DataError("unrecognised captions file: expected COCO captions JSON (images + annotations), "
                    "a Karpathy split JSON (images[].sentences) or a JSONL manifest (image, caption, split)", file)


def parse_json(data: bytes, file: str, policy: BadItems):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        if policy.policy == "fail":
            line = data.count(b"\n", 0, e.start) + 1
            column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
            raise DataError(f"invalid UTF-8: byte 0x{data[e.start]:02x} at byte offset {e.start} ({e.reason})",
                            file, f"line {line}, column {column}") from None
        # Under 'skip', keep the bad bytes as lone surrogates: the caption holding them is then
        # rejected on its own (validate.undecodable) and the rest of the file still loads.
        text = data.decode("utf-8", errors="surrogateescape")
    try:
        return json.loads(text.removeprefix("\ufeff"))
    except json.JSONDecodeError as e:
        raise DataError(f"malformed JSON: {e.msg}", file, f"line {e.lineno}, column {e.colno}") from None


def resolve_image(images_root: Path, record: CaptionRecord) -> Path:
    """The file a record names: its path as given when absolute, else under the images root."""
    path = Path(record.image_path)
    return path if path.is_absolute() else Path(images_root) / path
