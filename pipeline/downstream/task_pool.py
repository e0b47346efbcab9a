"""The downstream suite's tasks side by side: one worker process per job, each on its share of the CPU threads.

A probe trains its small heads on one thread (head_training.threads: a second thread on products this small waits
more than it computes), so one task after another leaves every other core idle. Tasks are independent (each reads
its own inputs and cache folder and writes its own output folder), and each is the same seeded computation in a
worker as in the parent, so running them side by side changes only when they finish, not what they write.

The caller gets each task's printed report back in the order it asked for, whichever finished first; a user error
in a task (a bad file, a bad item) comes back as that error, as it would from the task run alone.
"""
from __future__ import annotations

import contextlib
import io
import multiprocessing
from typing import Callable, Sequence

import torch

from pipeline.errors import GroundedBertError


def auto_jobs(mode: str, n_tasks: int) -> int:
    """`--jobs 0`: as many tasks at once as torch has threads (every core, or OMP_NUM_THREADS), since a probe uses
    one; a fine-tune uses every thread itself, and a GPU is one device, so those run one task at a time."""
    if mode != "probe" or torch.cuda.is_available():
        return 1
    return max(1, min(n_tasks, torch.get_num_threads()))


def _context():
    """fork where there is no CUDA to inherit (the workers start at once, with torch already imported); spawn
    otherwise, because a CUDA context does not survive a fork."""
    fork = "fork" in multiprocessing.get_all_start_methods() and not torch.cuda.is_available()
    return multiprocessing.get_context("fork" if fork else "spawn")


def _start_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _run_captured(fn: Callable, args: tuple) -> tuple[str, str | None]:
    """fn(*args) in a worker: what it printed, and the message of the user error it raised (None if none).
    The message travels as text, since not every error class can be rebuilt from its pickled arguments."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            fn(*args)
    except GroundedBertError as e:
        return printed.getvalue(), str(e)
    return printed.getvalue(), None


def run_side_by_side(fn: Callable, calls: Sequence[tuple], jobs: int, *, first: Sequence[int] = ()):
    """Yield what fn(*call) printed, for each call in order, running `jobs` of them at a time in worker processes
    that share torch's threads between them. `first`: indices of the calls to start before the others (the
    longest), so that no worker is left with a long task at the end while the other waits.

    A GroundedBertError in a call is raised here, after what that call printed, and the calls still running are
    stopped; the reports of the calls before it were yielded already, as they would be one after another."""
    order = list(first) + [i for i in range(len(calls)) if i not in set(first)]
    threads = max(1, torch.get_num_threads() // jobs)
    with _context().Pool(jobs, initializer=_start_worker, initargs=(threads,)) as pool:
        pending = {i: pool.apply_async(_run_captured, (fn, calls[i])) for i in order}
        for i in range(len(calls)):
            printed, error = pending[i].get()
            yield printed   # what it printed before any error, as it would have run alone
            if error is not None:
                raise GroundedBertError(error)   # leaving the `with` stops the workers
