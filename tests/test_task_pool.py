"""The downstream suite's worker pool: reports in the asked order, a user error or a dead worker named, and the
tasks beside a failure stopped rather than waited for."""
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from pipeline.downstream.task_pool import auto_jobs, run_side_by_side
from pipeline.errors import DataError, GroundedBertError


# Module level: a forked worker receives the function by reference.
def _print_after(name: str, delay: float) -> None:
    time.sleep(delay)
    print(f"report of {name}")


def _kill_myself(name: str, delay: float) -> None:
    print("half a report")
    os.kill(os.getpid(), signal.SIGKILL)


def _bad_item(name: str, delay: float) -> None:
    time.sleep(delay)
    print(f"{name} began")
    raise DataError("item line 3: label 'maybe' not in the rte label set", file="dev.tsv")


def _wait_forever(name: str, pid_file: str) -> None:
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(600)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A terminated child that nobody has reaped yet still answers kill(0): look at its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_reports_come_back_in_the_asked_order_whichever_finishes_first():
    calls = [("slow", 0.6), ("fast", 0.0), ("middle", 0.2)]
    reports = list(run_side_by_side(_print_after, calls, jobs=3, first=[0]))
    assert reports == ["report of slow\n", "report of fast\n", "report of middle\n"]


def _dispatch_bad_rte(name: str, delay: float) -> None:
    (_bad_item if name == "rte" else _print_after)(name, delay)


def test_a_user_error_comes_back_as_that_error_after_the_reports_before_it():
    calls = [("cola", 0.0), ("rte", 0.1), ("sst2", 0.0)]
    reports = []
    with pytest.raises(GroundedBertError, match=r"dev\.tsv.*item line 3: label 'maybe'"):
        for printed in run_side_by_side(_dispatch_bad_rte, calls, jobs=2):
            reports.append(printed)
    assert reports == ["report of cola\n", "rte began\n"]


def _dispatch_kill_mrpc(name: str, delay: float) -> None:
    (_kill_myself if name == "mrpc" else _print_after)(name, delay)


def test_a_killed_worker_is_named_instead_of_leaving_the_command_waiting():
    calls = [("mrpc", 0.0), ("cola", 5.0)]   # mrpc first: the first report asked for is the one that never comes
    started = time.monotonic()
    with pytest.raises(GroundedBertError, match=r"task mrpc: a worker process stopped without a result.*--jobs 1"):
        list(run_side_by_side(_dispatch_kill_mrpc, calls, jobs=2, labels=["mrpc", "cola"]))
    assert time.monotonic() - started < 60


def _dispatch_fail_or_wait(name: str, arg) -> None:
    if name == "bad":
        _bad_item(name, 0.5)   # long enough for the waiting task to have written its PID
    else:
        _wait_forever(name, arg)


def test_a_failure_stops_the_task_running_beside_it(tmp_path):
    pid_file = tmp_path / "pid"
    calls = [("bad", 0.0), ("long", str(pid_file))]
    started = time.monotonic()
    with pytest.raises(GroundedBertError, match="label 'maybe'"):
        list(run_side_by_side(_dispatch_fail_or_wait, calls, jobs=2))
    assert time.monotonic() - started < 60, "the command waited for the task beside the failure"
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "the worker beside the failure is still running"


def test_auto_jobs_runs_probes_side_by_side_and_finetunes_one_at_a_time(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert auto_jobs("probe", 11) == 4
    assert auto_jobs("probe", 2) == 2          # never more workers than tasks
    assert auto_jobs("finetune", 11) == 1      # a fine-tune uses every thread itself
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert auto_jobs("probe", 11) == 1         # one GPU: one task at a time
