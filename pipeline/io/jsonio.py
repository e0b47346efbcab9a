"""Reading a JSON file with an error a user can act on, and a value at a dotted key of what it held."""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.errors import CacheError


def read_json(path: Path, error: type[Exception] = CacheError) -> dict:
    """A JSON file, or `error` naming the file and, for malformed JSON, the line and column.
    CacheError by default: most of the JSON files read back are a cache's plan, manifest and reports."""
    path = Path(path)
    if not path.exists():
        raise error(f"file {path}: not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise error(f"file {path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e


def at(d: dict, dotted: str, default=None):
    """d["a"]["b"] for "a.b", or `default` where a level is missing or not a dict."""
    for k in dotted.split("."):
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d
