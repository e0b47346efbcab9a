"""Shared by the scale benches: peak memory of a process and its workers, the machine's load, JSON lines.

Memory is sampled from /proc every 0.2 s over the process and all its descendants (DataLoader workers):
the sum of RSS (what `ps` shows; counts pages a forked worker shares with its parent twice) and the sum
of PSS (each shared page divided among its sharers: what the processes really hold together). Neither
counts the page cache, which the kernel gives back under pressure.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:   # the process exited while we looked: it has no children left to count
        pass
    return out


def _tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def _field(path: str, name: str) -> int:
    """A 'Name:   123 kB' line of a /proc file, in bytes (0 when the process has gone)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:   # the process has gone
        pass
    return 0


class PeakMemory:
    """with PeakMemory() as peak: ...; peak.rss, peak.pss (bytes, summed over the process tree), peak.workers."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.rss, self.pss, self.workers = interval, 0, 0, 0
        self._stop = threading.Event()

    def sample(self) -> None:
        pids = _tree(os.getpid())
        self.rss = max(self.rss, sum(_field(f"/proc/{p}/status", "VmRSS") for p in pids))
        self.pss = max(self.pss, sum(_field(f"/proc/{p}/smaps_rollup", "Pss") for p in pids))
        self.workers = max(self.workers, len(pids) - 1)

    def _run(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self):
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live descendants: a step's cost that, unlike its
    wall time, does not grow when other jobs share the cores."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for p in _tree(os.getpid()):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])      # utime, stime
        except OSError:   # a worker that exited between listing and reading: its time is gone with it
            pass
    return total / tick


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def emit(record: dict) -> None:
    """One JSON line on stdout, with the time and the load average (other jobs share this machine)."""
    record = {**record, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "loadavg": load()}
    print(json.dumps(record), flush=True)


def gib(n: float) -> float:
    return round(n / 2**30, 3)
