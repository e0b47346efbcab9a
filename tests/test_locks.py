"""One process at a time in a cache split folder or a run folder, tested with real concurrent processes: a
second extraction or training stops at once naming the first, or with --wait waits and then finds the work
done; a lock whose holder was SIGKILLed is taken over, and the taker says so."""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from extract_helpers import extract_args, make_dataset, run_cli
from pipeline.cache.verify import verify_cache
from pipeline.errors import FolderBusyError
from pipeline.io.locks import LOCK_NAME, lock_folder, read_holder

REPO = Path(__file__).resolve().parent.parent

# Holds FOLDER's lock, after saying so on stdout, until killed or until the file GATE exists: a deterministic
# first process.
HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from pipeline.io.locks import lock_folder
    lock = lock_folder(sys.argv[1], task=sys.argv[2])
    print("held", flush=True)
    while not Path(sys.argv[3]).exists():
        time.sleep(0.02)
    lock.release()
""")

# A real extraction that stops after its first shard (in $SPLIT: not a free-space probe's) until the file $GATE
# exists, still holding the folder.
GATED_EXTRACT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import pipeline.io.atomic as atomic
    real, gate = atomic.write_bytes_atomic, Path(os.environ["GATE"])
    def gated(path, data):
        real(path, data)
        if Path(path).suffix == ".h5" and Path(path).parent.parent == Path(os.environ["SPLIT"]):
            while not gate.exists():
                time.sleep(0.02)
    atomic.write_bytes_atomic = gated
    from stages.extract import app
    app(sys.argv[1:])
""")


def _env(**extra):
    return dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'tests'}", HF_HUB_OFFLINE="1",
                OMP_NUM_THREADS="1", **extra)


def _python(*args, **kwargs):
    return subprocess.Popen([sys.executable, *args], env=kwargs.pop("env", _env()), cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def _hold(folder: Path, task: str, gate: Path | None = None) -> subprocess.Popen:
    proc = _python("-c", HOLDER, str(folder), task, str(gate or folder / "never"))
    assert proc.stdout.readline().strip() == "held", proc.stderr.read()
    return proc


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), n_images=6, per_image=2)


def test_busy_folder_names_its_holder_and_a_release_deletes_the_lock(tmp_path):
    holder = _hold(tmp_path, "extraction")
    try:
        with pytest.raises(FolderBusyError) as e:
            lock_folder(tmp_path, task="extraction", hint="try later")
        message = str(e.value)
        assert f"pid {holder.pid} on {socket.gethostname()}, started 20" in message and "try later" in message
        assert "\n" not in message
    finally:
        holder.kill()
        holder.wait()
    with lock_folder(tmp_path, task="extraction", log=lambda m: None) as lock:
        assert read_holder(lock.path).pid == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_second_extraction_stops_at_once_and_wait_finds_the_work_done(tmp_path, tiny, data):
    cache, gate = tmp_path / "c", tmp_path / "go"
    split = cache / "train"
    child = tmp_path / "gated.py"
    child.write_text(GATED_EXTRACT)
    first = _python(str(child), *extract_args(*data, cache, tiny), env=_env(GATE=str(gate), SPLIT=str(split)))
    try:
        deadline = time.time() + 120
        while not list(split.rglob("*.h5")):   # the first shard is written: the first job holds the folder
            assert first.poll() is None, first.stderr.read()[-2000:]
            assert time.time() < deadline, "no shard appeared"
            time.sleep(0.05)
        shards = sorted(split.rglob("*.h5"))

        second = run_cli(extract_args(*data, cache, tiny))   # refused at once: this process can ask as well
        assert second.exit_code == 2, second.output
        lines = _error_lines(second.output)
        assert len(lines) == 1 and lines[0].startswith(f"error: folder {split}: another extraction is running")
        assert f"pid {first.pid} on {socket.gethostname()}" in lines[0] and "--wait" in lines[0]
        assert sorted(split.rglob("*.h5")) == shards and not list(split.rglob(".tmp-*"))

        waiting = _python("-m", "stages.extract", *extract_args(*data, cache, tiny, "--wait"))
        line = waiting.stderr.readline()   # said before it blocks, so the gate opens only once it waits
        assert f"waiting for the extraction of pid {first.pid}" in line, line + waiting.stderr.read()
        gate.touch()
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0 and "complete" in out, err[-2000:]
        done = {p: os.stat(p).st_mtime_ns for p in split.rglob("*.h5")}
        out, err = waiting.communicate(timeout=120)
        assert waiting.returncode == 0, err[-2000:]
        assert "up to date" in out and "nothing to do" in out
        assert {p: os.stat(p).st_mtime_ns for p in split.rglob("*.h5")} == done   # it computed nothing
        assert not (split / LOCK_NAME).exists()
    finally:
        for proc in (first, locals().get("waiting")):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def test_lock_of_a_killed_holder_is_taken_over_and_said(tmp_path, tiny, data):
    cache = tmp_path / "c"
    holder = _hold(cache / "train", "extraction")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert read_holder(cache / "train" / LOCK_NAME).pid == holder.pid   # what a killed run leaves
    out = run_cli(extract_args(*data, cache, tiny))   # the holder was another process; the taker can be this one
    assert out.exit_code == 0, out.output[-2000:]
    assert f"the extraction that held this folder is no longer running (pid {holder.pid} on" in out.output
    assert "taking over its lock" in out.output and "complete" in out.output
    assert not (cache / "train" / LOCK_NAME).exists()
    assert verify_cache(cache / "train") == []


def test_two_training_runs_in_one_folder(tmp_path):
    from stage2_fixtures import TINY_TRAIN, make_cache

    cache, run = make_cache(tmp_path / "cache"), tmp_path / "run"
    cmd = [sys.executable, "-m", "stages.train", "--cache", str(cache), "--out", str(run),
           *[a for s in TINY_TRAIN for a in ("--set", s)]]
    holder = _hold(run, "training run")
    try:
        busy = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert busy.returncode == 2, busy.stderr
    lines = [line for line in _error_lines(busy.stderr) if not line.startswith("objective:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: folder {run}: another training run is running")
    assert f"pid {holder.pid}" in lines[0] and not (run / "checkpoints").exists()

    gate = tmp_path / "go"
    holder = _hold(run, "training run", gate)   # releases cleanly once the waiter has said it waits
    leftover = run / "checkpoints" / ".tmp-last.pt.k1lled"   # what a run killed mid-write leaves
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a checkpoint")
    waiting = _python(*cmd[1:], "--wait")
    try:
        lines = [waiting.stderr.readline() for _ in range(2)]   # the objective line, then the waiting one
        assert f"waiting for the training run of pid {holder.pid}" in lines[1], lines
        gate.touch()
        holder.wait(timeout=30)
        out, err = waiting.communicate(timeout=180)
    finally:
        for proc in (holder, waiting):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert waiting.returncode == 0, err[-2000:]
    assert "taking over" not in err   # a clean release leaves nothing to take over
    assert json.loads(out.splitlines()[-1])["epochs"] == 3 and not (run / LOCK_NAME).exists()
    assert not leftover.exists() and (run / "checkpoints" / "last.pt").exists()


# Holds FOLDER's lock and forks a child that outlives it (as a DataLoader worker would), then waits to be killed.
HOLDER_WITH_CHILD = textwrap.dedent("""
    import os, sys, time
    from pipeline.io.locks import lock_folder
    lock = lock_folder(sys.argv[1], task="extraction")
    child = os.fork()
    if child == 0:   # fork has returned here: the child has closed its copy of the lock (register_at_fork)
        print("ready", file=sys.stderr, flush=True)
        time.sleep(60)
        os._exit(0)
    print(child, flush=True)
    time.sleep(60)
""")


def test_a_forked_child_does_not_keep_a_killed_holders_lock(tmp_path):
    folder = tmp_path / "split"
    proc = _python("-c", HOLDER_WITH_CHILD, str(folder))
    # Killing the holder before its child is ready would leave the child holding the lock it has not yet closed.
    child = int(proc.stdout.readline())
    assert proc.stderr.readline().strip() == "ready"
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        os.kill(child, 0)   # the child still runs
        logs = []
        lock = lock_folder(folder, task="extraction", log=logs.append)
        assert "no longer running" in logs[0] and str(proc.pid) in logs[0]
        lock.release()
    finally:
        os.kill(child, signal.SIGKILL)
