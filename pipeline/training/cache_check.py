"""Is this cache the one the configuration (or the trained run) expects? Checked before any training step.

The fingerprint in each split's manifest (pipeline/extraction/plan.py) records the extraction knobs;
a cache left over from other knobs is "stale" and would train on the wrong features without a word.
"""
from __future__ import annotations

from pipeline.cache_format import MANIFEST, fingerprint_diff
from pipeline.errors import CacheError

# fingerprint field -> extract.* key it records (the fields the extract stage writes from the config).
CONFIG_FIELDS = {"storage_dtype": "storage_dtype", "compute_dtype": "compute_dtype",
                 "text.model": "text_model", "text.layer": "text_layer", "text.max_length": "max_length",
                 "image.model": "image_model", "image.image_size": "image_size",
                 # Recorded only when on (see stages/extract.py), so absent means "off or older cache".
                 "image.compile": "image_compile", "image.cast_weights": "image_cast_weights"}
# Fields that differ between splits of one cache, or that do not change the features.
PER_SPLIT = ("split", "shard_size", "modalities")


def identity(fingerprint: dict) -> dict:
    """What must agree between the splits a run trains and is evaluated on: encoders, weights, dtypes."""
    return {k: v for k, v in fingerprint.items() if k not in PER_SPLIT}


def _get(d: dict, dotted: str):
    for k in dotted.split("."):
        if not isinstance(d, dict) or k not in d:
            return "<absent>"
        d = d[k]
    return d


def check_against_config(reader, extract_cfg: dict) -> None:
    """Fail naming the fields where the cache's fingerprint disagrees with the extract.* configuration."""
    diffs = []
    for field, key in CONFIG_FIELDS.items():
        found = _get(reader.fingerprint, field)
        if found != "<absent>" and found != extract_cfg.get(key):
            diffs.append(f"{field} (cache: {found!r}, configuration extract.{key}: {extract_cfg.get(key)!r})")
    if diffs:
        raise CacheError(f"file {reader.split_dir / MANIFEST}: the cache is stale, built with another "
                         f"configuration; fields that differ: {', '.join(diffs)}. Run the extraction again "
                         f"(`dvc repro` or `groundedbert extract`).")


def check_same_cache(reader, expected: dict, what: str) -> None:
    """Fail when a split's encoders/dtypes differ from `expected` (another split's, or the run's)."""
    diffs = fingerprint_diff(expected, identity(reader.fingerprint))
    if diffs:
        raise CacheError(f"file {reader.split_dir / MANIFEST}: this split was extracted differently from "
                         f"{what}; fields that differ: {', '.join(diffs[:8])}")
