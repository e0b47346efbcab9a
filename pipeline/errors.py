"""Errors users can act on: each names the file, the item and the reason.

The CLI catches `GroundedBertError` and prints its message without a traceback (exit code 2);
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class GroundedBertError(Exception):
    """Base class for errors caused by the user's input or configuration."""


class ConfigError(GroundedBertError):
    pass


class DataError(GroundedBertError):
    """A bad input item. `file` and `item` may be None when they do not apply."""

    def __init__(self, reason: str, file: str | None = None, item: str | None = None):
        self.reason, self.file, self.item = reason, file, item
        where = []
        if file is not None:
            where.append(f"file {file}")
        if item is not None:
            where.append(f"item {item}")
        super().__init__(f"{', '.join(where)}: {reason}" if where else reason)

    def as_record(self) -> dict:
        """How a skipped item is listed in the report stored with the cache."""
        return {"file": self.file, "item": self.item, "reason": self.reason}


class CacheError(GroundedBertError):
    """A cache that is missing, incomplete, corrupt or built with another configuration."""


class TrainingError(GroundedBertError):
    pass


class ExportError(GroundedBertError):
    """An exported encoder folder that is incomplete, from another format version, or inconsistent."""


class DiskFullError(GroundedBertError):
    """A write that did not fit: the folder, the bytes it needed (None when a library wrote on its own) and the
    bytes free. What was written before it (shards, checkpoints) is complete and kept."""

    def __init__(self, folder, needed: int | None, free: int, what: str = "a write"):
        self.folder, self.needed, self.free = str(folder), needed, free
        need = f"needs {needed:,} bytes" if needed is not None else "did not fit"
        super().__init__(f"folder {folder}: disk full: {what} {need}, {free:,} bytes free; free some space "
                         f"(or use another folder) and run the same command again, which keeps what was completed")


class FolderBusyError(GroundedBertError):
    """Another live process holds the folder's lock (pipeline/io/locks.py)."""


class BadItems:
    """The --on-error policy: 'fail' raises at the first bad item, 'skip' records it and goes on."""

    POLICIES = ("fail", "skip")

    def __init__(self, policy: str = "fail"):
        if policy not in self.POLICIES:
            raise ConfigError(f"on_error must be one of {self.POLICIES}, got {policy!r}")
        self.policy = policy
        self.skipped: list[dict] = []

    def handle(self, error: DataError) -> None:
        if self.policy == "fail":
            raise error
        self.skipped.append(error.as_record())
