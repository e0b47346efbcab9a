"""Is this cache the one the configuration (or the trained run) expects? Checked before any training step.

The fingerprint in each split's manifest records the extraction knobs (pipeline/cache/fingerprint.py);
a cache left over from other knobs is "stale" and would train on the wrong features without a word.
"""
from __future__ import annotations

from pipeline.cache.fingerprint import config_mismatches, fingerprint_diff
from pipeline.cache.format import MANIFEST
from pipeline.errors import CacheError

# Fields that differ between splits of one cache, or that do not change the features.
PER_SPLIT = ("split", "shard_size", "modalities")


def identity(fingerprint: dict) -> dict:
    """What must agree between the splits a run trains and is evaluated on: encoders, weights, dtypes."""
    return {k: v for k, v in fingerprint.items() if k not in PER_SPLIT}


def check_against_config(reader, extract_cfg: dict) -> None:
    """Fail naming the fields where the cache's fingerprint disagrees with the extract.* configuration."""
    diffs = config_mismatches(reader.fingerprint, extract_cfg)
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
