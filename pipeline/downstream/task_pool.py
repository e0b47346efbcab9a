"""The downstream suite's tasks side by side: one worker process per job, each on its share of the CPU threads.

A probe trains its small heads on one thread (head_training.threads: a second thread on products this small waits
more than it computes), so one task after another leaves every other core idle. Tasks are independent (each reads
its own inputs and cache folder and writes its own output folder), and each is the same seeded computation in a
worker as in the parent, so running them side by side changes only when they finish, not what they write.

The caller gets each task's printed report back in the order it asked for, whichever finished first; a user error
in a task (a bad file, a bad item) comes back as that error, as it would from the task run alone, and a worker that
dies (killed, out of memory) is named instead of leaving the command waiting for it.
"""
from __future__ import annotations

import contextlib
import io
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
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


def _stop_now(pool: ProcessPoolExecutor) -> None:
    """Drop the calls not started and end the running ones: after a failure, a task beside it would otherwise hold
    the command until it finished (hours, on a real GLUE task). Python 3.14 names this terminate_workers()."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()


def run_side_by_side(fn: Callable, calls: Sequence[tuple], jobs: int, *, first: Sequence[int] = (),
                     labels: Sequence[str] | None = None):
    """Yield what fn(*call) printed, for each call in order, running `jobs` of them at a time in worker processes
    that share torch's threads between them. `first`: indices of the calls to start before the others (the
    longest), so that no worker is left with a long task at the end while the other waits. `labels` name the calls
    in errors (default: their position).

    A GroundedBertError in a call is raised here, after what that call printed, and the calls still running are
    stopped; the reports of the calls before it were yielded already, as they would be one after another."""
    labels = list(labels) if labels is not None else [f"#{i}" for i in range(len(calls))]
    started_first = set(first)
    order = list(first) + [i for i in range(len(calls)) if i not in started_first]
    threads = max(1, torch.get_num_threads() // jobs)
    pool = ProcessPoolExecutor(jobs, mp_context=_context(), initializer=_start_worker, initargs=(threads,))
    try:
        futures = {i: pool.submit(_run_captured, fn, calls[i]) for i in order}   # started in this order
        for i in range(len(calls)):
            try:
                printed, error = futures[i].result()
            except BrokenProcessPool:
                raise GroundedBertError(f"task {labels[i]}: a worker process stopped without a result (killed, or out "
                                        "of memory?); the tasks reported before it are complete; run the rest with "
                                        "--jobs 1 to see the failure in the command's own process") from None
            yield printed   # what it printed before any error, as it would have run alone
            if error is not None:
                raise GroundedBertError(error)
    except BaseException:   # an error, or the caller closing the generator early (GeneratorExit)
        _stop_now(pool)
        raise
    pool.shutdown(wait=True)
