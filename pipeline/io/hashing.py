"""Content hashes: of a JSON-able object (fingerprints, keys), of a text and of a file (shards, weights). The hash
of a torch module's weights is encoders/weights_hash.py's (it needs torch)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path


def digest(obj) -> str:
    """sha256 of a JSON-able object in canonical form."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()
