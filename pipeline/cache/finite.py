"""Cached features that are not finite: found where a shard's arrays are read, named by file and item.

A NaN or inf in the token states or patches would otherwise reach training as a non-finite loss a
few steps later (or, with the OT's padding rules, as a silently wrong one), far from its cause. The
check is one pass over arrays already in memory; the item ids are read from the shard only when a
value is bad. `groundedbert cache verify` (verify.py) runs the same row search over whole shards, in blocks.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from pipeline.errors import CacheError

# Only missing shards are recomputed, so deleting the bad one is how it gets extracted again.
FIX = "delete that shard and run the same extraction again (only missing shards are recomputed)"


def first_bad_row(values: np.ndarray) -> int | None:
    """Index of the first row (along axis 0) holding a NaN or an infinity, or None when all are finite."""
    if np.isfinite(values).all():
        return None
    return int(np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))[0])


def caption_of_token(offsets: np.ndarray, token_row: int) -> int:
    """The caption (local to its shard) whose tokens include `token_row`, given the shard's offsets."""
    return int(np.searchsorted(offsets, token_row, side="right")) - 1


def check_text_states(path: Path, states: np.ndarray, offsets: np.ndarray) -> None:
    """A text shard's token states (T, d) with its offsets (C + 1,): CacheError naming the first bad caption."""
    row = first_bad_row(states)
    if row is not None:
        caption = caption_of_token(offsets, row)
        raise CacheError(f"file {path}: item {_item_id(path, caption)}: the cached token states hold NaN or "
                         f"infinite values (token {row - int(offsets[caption])} of caption {caption} in the "
                         f"shard); {FIX}")


def check_image_rows(path: Path, patches: np.ndarray, prefix: np.ndarray, local_rows=None) -> None:
    """Image features of one shard, patches (U, m, d) and prefix (U, P, d), its rows `local_rows` (all of
    them when None): CacheError naming the first image holding a non-finite value."""
    for name, values in (("patches", patches), ("prefix tokens", prefix)):
        row = first_bad_row(values)
        if row is not None:
            local = row if local_rows is None else int(local_rows[row])
            raise CacheError(f"file {path}: item {_item_id(path, local)}: the cached {name} hold NaN or "
                             f"infinite values (image {local} in the shard); {FIX}")


def _item_id(path: Path, local: int) -> str:
    """The id of item `local` of a shard (caption ids in a text shard, image ids in an image shard)."""
    try:
        with h5py.File(path, "r") as f:
            ids = f["caption_ids"] if "caption_ids" in f else f["image_ids"]
            value = ids[local]
    except (OSError, KeyError, IndexError):
        return f"#{local} (its id is unreadable)"
    return value.decode() if isinstance(value, bytes) else str(value)
