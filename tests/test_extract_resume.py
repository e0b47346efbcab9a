"""Crash safety and scale-out: SIGKILL mid-run then resume, and two torchrun ranks, both equal to one clean run."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from extract_helpers import extract_args, make_dataset, run_cli, shard_bytes

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), n_images=6, per_image=2)


def _args(data, cache, tiny):
    return extract_args(*data, cache, tiny, "--shard-size", "2")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny, data):
    cache = tmp_path_factory.mktemp("ref")
    r = run_cli(_args(data, cache, tiny))
    assert r.exit_code == 0, r.output
    return cache / "train"


def _env():
    return dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'tests'}", HF_HUB_OFFLINE="1",
                OMP_NUM_THREADS="1")


# The child slows every dataset write, so the kill lands while shards are still being written
# (often with a temporary file open): the point is that no moment of a run is unsafe to die at.
SLOW_CHILD = textwrap.dedent("""
    import sys, time
    import pipeline.cache.format as fmt
    put = fmt.put
    def slow_put(*a, **k):
        time.sleep(0.04)
        return put(*a, **k)
    fmt.put = slow_put
    from stages.extract import app
    app(sys.argv[1:])
""")


def test_sigkill_then_rerun_computes_only_missing_shards_and_matches(tmp_path, tiny, data, reference):
    child = tmp_path / "child.py"
    child.write_text(SLOW_CHILD)
    cache = tmp_path / "c"
    split = cache / "train"
    proc = subprocess.Popen([sys.executable, str(child), *_args(data, cache, tiny)], env=_env(), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list(split.rglob("*.h5")):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "no shard appeared"
        time.sleep(0.01)
    time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (split / "manifest.json").exists()
    survived = {p: os.stat(p).st_mtime_ns for p in split.rglob("*.h5")}
    assert 0 < len(survived) < 9  # 3 image + 6 caption shards planned
    r = run_cli(_args(data, cache, tiny))
    assert r.exit_code == 0, r.output
    assert all(os.stat(p).st_mtime_ns == t for p, t in survived.items())
    assert not list(split.rglob(".tmp-*"))
    assert shard_bytes(split) == shard_bytes(reference)


def test_two_torchrun_ranks_build_the_same_cache(tmp_path, tiny, data, reference):
    torchrun = str(Path(sys.executable).parent / "torchrun")
    cache = tmp_path / "c"
    out = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "stages.extract",
                          *_args(data, cache, tiny)], env=_env(), cwd=REPO, capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert shard_bytes(cache / "train") == shard_bytes(reference)
    report = json.loads((cache / "train" / "run.json").read_text())
    assert report["world_size"] == 2 and report["timing"]["image"]["ranks"] == 2
