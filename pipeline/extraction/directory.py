"""Taking a split folder for extraction: the lock, stray temporary files, the plan, --overwrite.

One extraction job at a time in a split folder: its leader (the only process, or rank 0 under torchrun)
holds the folder's lock (pipeline/io/locks.py) from before it cleans up until the manifest is written, and
the other ranks of its job work under it. So two jobs never compute the same shards, and the leader can
remove `.tmp-*` files (what a killed run leaves) and delete a cache for `--overwrite` knowing that nobody
is writing into the folder.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.cache.fingerprint import check_fingerprint
from pipeline.cache.format import MANIFEST, PLAN, REPORT, RUN_LOG
from pipeline.errors import CacheError
from pipeline.io.atomic import remove_temporaries, write_json_atomic
from pipeline.io.jsonio import read_json
from pipeline.io.locks import LOCK_NAME, FolderLock, lock_folder

OURS_FILES = {PLAN, MANIFEST, REPORT, RUN_LOG, LOCK_NAME}
OURS_DIRS = {"text", "image"}
TASK = "extraction"
BUSY_HINT = ("wait for it to finish, or run `groundedbert extract` again with --wait to start once it has "
             "(it then computes only what that one left undone)")


def lock_split(split_dir: Path, wait: bool = False) -> FolderLock:
    return lock_folder(split_dir, task=TASK, wait=wait, hint=BUSY_HINT)


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


def take(split_dir: Path, plan: dict, *, overwrite: bool, leader: bool, wait: bool = False) -> FolderLock | None:
    """The leader locks the folder, cleans up, and checks or writes the plan; it returns the held lock.
    The other ranks of its job (called after a barrier) only check the plan.

    Without --overwrite a plan made with another fingerprint is a CacheError naming the fields."""
    split_dir = Path(split_dir)
    if not leader:
        check_fingerprint(split_dir, plan["fingerprint"])
        return None
    lock = lock_split(split_dir, wait)
    try:
        remove_temporaries(split_dir, *(split_dir / d for d in OURS_DIRS))
        if (split_dir / PLAN).exists():
            if overwrite and read_json(split_dir / PLAN) != plan:
                delete_cache(split_dir)
            else:
                check_fingerprint(split_dir, plan["fingerprint"])
        if not (split_dir / PLAN).exists():
            write_json_atomic(split_dir / PLAN, plan)
    except BaseException:
        lock.release()
        raise
    return lock
