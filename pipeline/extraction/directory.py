"""Taking a split folder for extraction: the lock, stray temporary files, the plan, --overwrite.

A process that extracts into a folder holds a shared lock on `.lock` for its whole run. Cleaning up
`.tmp-*` files (what a killed run leaves) and deleting a cache for `--overwrite` need the exclusive
lock, so they can never pull a temporary file from under another process writing into the same
folder (two `--shards` runs side by side, or the ranks of a torchrun job).
"""
from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from pipeline.cache_format import MANIFEST, PLAN, REPORT, RUN_LOG, check_fingerprint, read_json, write_json_atomic
from pipeline.errors import CacheError

LOCK = ".lock"
OURS_FILES = {PLAN, MANIFEST, REPORT, RUN_LOG, LOCK}
OURS_DIRS = {"text", "image"}


class SplitLock:
    def __init__(self, split_dir: Path):
        Path(split_dir).mkdir(parents=True, exist_ok=True)
        self.fd = os.open(Path(split_dir) / LOCK, os.O_RDWR | os.O_CREAT, 0o644)

    def try_exclusive(self) -> bool:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def shared(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_SH)  # blocks only while someone holds the exclusive lock

    def close(self) -> None:
        os.close(self.fd)  # releases the lock


def remove_stray_temporaries(split_dir: Path) -> list[Path]:
    """`.tmp-*` files of a killed run: never under a final name, so never part of the cache."""
    removed = []
    for folder in (Path(split_dir), *(Path(split_dir) / d for d in OURS_DIRS)):
        if folder.is_dir():
            for p in folder.glob(".tmp-*"):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def not_ours(split_dir: Path) -> list[Path]:
    """Files in the split folder that extraction did not create (it deletes nothing of these)."""
    out = []
    for p in Path(split_dir).iterdir():
        if p.is_dir() and p.name in OURS_DIRS:
            out += [q for q in p.iterdir() if not (q.is_file() and (q.suffix == ".h5" or q.name.startswith(".tmp-")))]
        elif not (p.is_file() and (p.name in OURS_FILES or p.name.startswith(".tmp-"))):
            out.append(p)
    return out


def delete_cache(split_dir: Path) -> None:
    foreign = not_ours(split_dir)
    if foreign:
        shown = ", ".join(str(p) for p in foreign[:5])
        raise CacheError(f"file {split_dir}: --overwrite refuses to delete a folder holding files extraction "
                         f"did not write: {shown}")
    for name in OURS_DIRS:
        if (Path(split_dir) / name).is_dir():
            shutil.rmtree(Path(split_dir) / name)
    for name in (MANIFEST, REPORT, RUN_LOG, PLAN):
        (Path(split_dir) / name).unlink(missing_ok=True)


def take(split_dir: Path, plan: dict, *, overwrite: bool, leader: bool) -> SplitLock:
    """Lock the folder, and (leader only) clean up, check or write the plan. Returns the held lock.

    Without --overwrite a plan made with another fingerprint is a CacheError naming the fields."""
    split_dir = Path(split_dir)
    lock = SplitLock(split_dir)
    try:
        if leader:
            _lead(split_dir, plan, lock, overwrite)
        lock.shared()  # converts the leader's exclusive lock; followers wait here while the leader cleans
        if not leader:
            check_fingerprint(split_dir, plan["fingerprint"])
    except BaseException:
        lock.close()
        raise
    return lock


def _lead(split_dir: Path, plan: dict, lock: SplitLock, overwrite: bool) -> None:
    exclusive = lock.try_exclusive()
    if exclusive:
        remove_stray_temporaries(split_dir)
    if (split_dir / PLAN).exists():
        if overwrite and read_json(split_dir / PLAN) != plan:
            if not exclusive:
                raise CacheError(f"file {split_dir}: another extraction is running in this folder; "
                                 "--overwrite cannot delete it now")
            delete_cache(split_dir)
        else:
            check_fingerprint(split_dir, plan["fingerprint"])
    if not (split_dir / PLAN).exists():
        write_json_atomic(split_dir / PLAN, plan)  # same content from any writer: concurrent writes are harmless
