"""One process at a time in a folder: an advisory lock on FOLDER/.lock held for a whole extraction or training.

The lock is flock(2), so the kernel drops it when its holder exits, however it exits (SIGKILL included): a
crashed run never leaves a folder locked. The holder writes who it is into the lock file (pid, host, start
time, command). A second process that finds the folder locked names that holder and stops, or with
`wait=True` waits for it. A process that gets the lock and finds a holder still written in the file knows
that holder died without releasing it: it takes the lock over and says so. A clean release deletes the file.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.errors import FolderBusyError
from pipeline.io.disk import full_disk_as_error

LOCK_NAME = ".lock"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Holder:
    pid: int
    host: str
    started: str   # UTC, ISO 8601
    command: str

    @classmethod
    def me(cls) -> "Holder":
        command = " ".join([Path(sys.executable).name, *sys.argv])
        return cls(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   command if len(command) <= 200 else command[:197] + "...")

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started} ({self.command})"


def read_holder(fd_or_path) -> Holder | None:
    """Who the lock file names; None for an empty (just created) or unreadable one."""
    try:
        if isinstance(fd_or_path, int):
            raw = os.pread(fd_or_path, 4096, 0)
        else:
            raw = Path(fd_or_path).read_bytes()
        return Holder(**json.loads(raw)) if raw else None
    except (OSError, ValueError, TypeError):
        return None


# The descriptors of the locks this process holds. A forked child (a DataLoader worker decoding images, say)
# inherits them, and flock belongs to the open file, not the process: if the holder were SIGKILLed, its
# children would keep the folder locked until they exit. So a child closes its copies at once; closing a
# copy does not release the parent's lock.
_HELD: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:   # already closed by whoever forked us: nothing of ours to release
            continue
    _HELD.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


class FolderLock:
    def __init__(self, path: Path, fd: int, taken_over: Holder | None):
        self.path, self.fd, self.taken_over, self.pid = path, fd, taken_over, os.getpid()
        _HELD.add(fd)

    def release(self) -> None:
        """Delete the file while still holding it (so nobody takes a stale copy), then let go."""
        if self.fd < 0 or os.getpid() != self.pid:   # a forked child: its copy is closed, the lock not its own
            return
        if _same_file(self.fd, self.path):
            self.path.unlink(missing_ok=True)
        _HELD.discard(self.fd)
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def lock_folder(folder: Path, *, task: str, wait: bool = False, hint: str = "wait for it to finish",
                log=_stderr) -> FolderLock:
    """Hold FOLDER/.lock for `task` ("extraction", "training run"). Busy: a FolderBusyError naming the holder and
    `hint`, or with `wait` a line saying whom it waits for, then the wait."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_lock(fd):
                holder = read_holder(path)
                who = holder.describe() if holder else "a process that has not written its name yet"
                if not wait:
                    raise FolderBusyError(f"folder {folder}: another {task} is running in it: {who}; {hint}")
                log(f"{folder}: waiting for the {task} of {who} to finish")
                fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)   # the holder released and deleted the file we locked: lock the one there now
    previous = read_holder(fd)
    if previous is not None:
        log(f"{folder}: the {task} that held this folder is no longer running ({previous.describe()}); "
            "taking over its lock")
    try:
        data = json.dumps(asdict(Holder.me())).encode()
        with full_disk_as_error(folder, len(data), f"the lock file {path.name}"):
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
    except BaseException:
        FolderLock(path, fd, None).release()
        raise
    return FolderLock(path, fd, previous)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
