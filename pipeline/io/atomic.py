"""Atomic writes: a file appears under its final name complete, or not at all.

Each file is written to a temporary file in the same folder and renamed into place, so a crash or SIGKILL
leaves at most a `.tmp-*` file beside it, never a half-written file under the final name.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from pipeline.io.disk import ensure_room, full_disk_as_error


@contextlib.contextmanager
def atomic_path(final: Path, size: int | None = None) -> Iterator[Path]:
    """Yield a temporary path in the final file's folder; rename it into place only on success.

    Same folder, so the rename is atomic on POSIX. `size`, when known, is checked against the free space
    first; a full disk, then or while the caller writes, is a DiskFullError naming the folder."""
    final = Path(final)
    with full_disk_as_error(final.parent, size, final.name):
        if size is not None:
            ensure_room(final.parent, size, final.name)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{final.name}.", dir=final.parent)
        os.close(fd)
        try:
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache on a shared filesystem is read by other users
            yield Path(tmp)
            with open(tmp, "rb") as f:  # durable before it becomes visible
                os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """A file built in memory, so its size is known: refused before the first byte when it cannot fit."""
    with atomic_path(path, size=len(data)) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_json_atomic(path: Path, obj) -> None:
    """Indented, keys sorted, newline-terminated: the same object always gives the same bytes."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def remove_temporaries(*folders: Path) -> list[Path]:
    """Delete the `.tmp-*` files that writers killed mid-write left in `folders` (never under a final name,
    so never part of a result). Only while holding their lock: a live writer's temporary looks the same.
    Only the folders named, not below: a folder of the user's own is left alone."""
    stale = [p for folder in map(Path, folders) if folder.is_dir() for p in folder.glob(".tmp-*") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
