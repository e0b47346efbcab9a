"""Free space, and a full disk as one clear error.

A write that does not fit must end in a `DiskFullError` naming the folder, the bytes the write needed and the
bytes free, never in a library's traceback: HDF5 writing onto a full disk prints pages of them and can
segfault. So our files are built in memory first (cache.format.atomic_h5, checkpoints, figures), their
size is known before the first byte is written, and a write that cannot fit is refused before it starts.
ENOSPC or EDQUOT from a write that was expected to fit (another process filled the disk meanwhile) becomes
the same error.
"""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator

from pipeline.errors import DiskFullError

FULL = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in FULL


def nearest_existing(path: Path) -> Path:
    """The path itself or its nearest existing parent: a folder about to be made lives on that filesystem."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged process may still write there (`df`'s Avail)."""
    st = os.statvfs(nearest_existing(folder))
    return st.f_bavail * st.f_frsize


def ensure_room(folder: Path, needed: int, what: str) -> None:
    """Refuse a write of `needed` bytes before it starts when the filesystem cannot hold it. Files take whole
    blocks, so the comparison rounds up to the block size."""
    st = os.statvfs(nearest_existing(folder))
    block = st.f_frsize or 1
    free = st.f_bavail * block
    if -(-needed // block) * block > free:
        raise DiskFullError(folder, needed, free, what)


@contextlib.contextmanager
def full_disk_as_error(folder: Path, needed: int | None = None, what: str = "a write") -> Iterator[None]:
    """ENOSPC/EDQUOT raised inside the block, by our writes or a library's (dvclive, matplotlib), as a
    DiskFullError naming `folder`."""
    try:
        yield
    except OSError as e:
        if not is_disk_full(e):
            raise
        raise DiskFullError(folder, needed, free_bytes(folder), what) from e
