"""A disk that fills up, on a real small filesystem (a tmpfs mounted for the test; skipped where it cannot be):
one line naming the folder, the bytes needed and the bytes free, exit 2, no temporary left, every completed
shard or checkpoint kept, and a rerun after freeing space completes."""
import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

import pipeline.io.atomic as atomic
from extract_helpers import extract_args, make_dataset, run_cli, shard_bytes
from pipeline.cache.verify import verify_cache
from pipeline.errors import DiskFullError
from pipeline.evaluation.figures import draw_alignment
from pipeline.io.jsonio import read_json
from pipeline.io.disk import free_bytes
from stages._common import friendly_errors

REPO = Path(__file__).resolve().parent.parent

# Fills the filesystem of $FILLER right after the first completed $WHEN (a shard in $SPLIT, or a training
# run's last.pt): the disk is full in the middle of a real run, as when another job takes the space.
FILL_CHILD = textwrap.dedent("""
    import os, runpy, sys
    from pathlib import Path
    import pipeline.io.atomic as atomic
    real, when = atomic.write_bytes_atomic, Path(os.environ["WHEN"])
    def fill(path):
        with open(path, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\\0" * 65536)
            except OSError:   # full: what this helper is for
                pass
    def then_fill(path, data):
        real(path, data)
        if Path(path).parent == when or Path(path) == when:
            atomic.write_bytes_atomic = real
            fill(os.environ["FILLER"])
    atomic.write_bytes_atomic = then_fill
    sys.argv = [os.environ["MODULE"], *sys.argv[1:]]
    runpy.run_module(os.environ["MODULE"], run_name="__main__")
""")


@pytest.fixture
def small_fs(tmp_path):
    """A filesystem of its own, 16 MiB, that really fills up."""
    mount = tmp_path / "fs"
    mount.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True,
                           text=True)
    except FileNotFoundError:
        pytest.skip("no `mount` command here")
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root only): {r.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _env(**extra):
    return dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'tests'}", HF_HUB_OFFLINE="1",
                OMP_NUM_THREADS="1", **extra)


def _run_filling(module: str, args: list[str], when: Path, filler: Path) -> subprocess.CompletedProcess:
    child = filler.parent.parent / "fill_child.py"
    child.write_text(FILL_CHILD)
    return subprocess.run([sys.executable, str(child), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=_env(WHEN=str(when), FILLER=str(filler), MODULE=module))


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return filler


def _temporaries(root: Path) -> list[Path]:
    return list(root.rglob(".tmp-*"))


def _error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr[-3000:]
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_too_big_a_file_is_refused_before_a_byte_is_written(small_fs, monkeypatch):
    free = free_bytes(small_fs)
    data = b"x" * (free + 1)
    monkeypatch.setattr(atomic.tempfile, "mkstemp", lambda **k: pytest.fail("a temporary file was made"))
    with pytest.raises(DiskFullError) as e:
        atomic.write_bytes_atomic(small_fs / "sub" / "big.bin", data)
    assert str(e.value).startswith(f"folder {small_fs / 'sub'}: disk full: big.bin needs {len(data):,} bytes, "
                                   f"{free:,} bytes free;")
    assert free_bytes(small_fs) == free and not list(small_fs.rglob("*.bin")) and not _temporaries(small_fs)


def test_disk_filling_during_a_write_keeps_the_old_file_and_no_temporary(small_fs, monkeypatch):
    atomic.write_json_atomic(small_fs / "metrics.json", {"old": 1})
    filler = _fill(small_fs)
    filler.write_bytes(filler.read_bytes()[: -(1 << 20)])   # 1 MiB free: the check passes, the write cannot
    monkeypatch.setattr(atomic, "ensure_room", lambda *a: None)   # as if another process took the space meanwhile
    with pytest.raises(DiskFullError, match=rf"folder {small_fs}: disk full: metrics.json needs [\d,]+ bytes"):
        atomic.write_bytes_atomic(small_fs / "metrics.json", b"{}" * (1 << 20))
    assert read_json(small_fs / "metrics.json") == {"old": 1} and not _temporaries(small_fs)
    monkeypatch.undo()
    _fill(small_fs)
    with pytest.raises(DiskFullError, match="alignment.png needs"):   # a figure is rendered, then refused
        draw_alignment(small_fs / "figures" / "alignment.png", torch.zeros(56, 56, 3, dtype=torch.uint8).numpy(),
                       "a caption", [], [])
    assert not _temporaries(small_fs)


def test_a_full_disk_outside_our_writes_is_still_one_line():
    app = typer.Typer()

    @app.command()
    @friendly_errors
    def write():
        raise OSError(errno.ENOSPC, "No space left on device", "/somewhere/out/log.tsv")

    r = CliRunner().invoke(app, [])
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: folder /somewhere/out: disk full")


def test_extraction_onto_a_disk_that_fills_up(small_fs, tmp_path, tiny):
    data = make_dataset(tmp_path / "data", n_images=6, per_image=2)
    cache = small_fs / "cache"
    split = cache / "train"
    out = _run_filling("stages.extract", extract_args(*data, cache, tiny), split / "image", small_fs / "filler")
    assert out.returncode == 2, out.stderr[-3000:]
    lines = _error_lines(out.stderr)
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"error: folder {split / 'image'}: disk full: 00001.h5 needs ")
    assert " bytes, 0 bytes free; free some space" in lines[0]
    kept = {p: os.stat(p).st_mtime_ns for p in split.rglob("*.h5")}
    assert list(kept) == [split / "image" / "00000.h5"]
    assert not _temporaries(small_fs) and not (split / "manifest.json").exists() and not (split / ".lock").exists()

    (small_fs / "filler").unlink()
    # The rerun and the check in this process: the full disk above is the part that needs its own interpreter.
    rerun = run_cli(extract_args(*data, cache, tiny))
    assert rerun.exit_code == 0 and "complete" in rerun.output, rerun.output[-3000:]
    assert {p: os.stat(p).st_mtime_ns for p in kept} == kept   # the completed shard was not recomputed
    assert verify_cache(split) == []
    reference = tmp_path / "ref"
    assert run_cli(extract_args(*data, reference, tiny)).exit_code == 0
    assert shard_bytes(split) == shard_bytes(reference / "train")


def test_training_onto_a_disk_that_fills_up(small_fs, tmp_path):
    from pipeline.config import resolve
    from pipeline.training.fit import fit
    from stage2_fixtures import TINY_TRAIN, make_cache

    cache, run = make_cache(tmp_path / "cache"), small_fs / "run"
    args = ["--cache", str(cache), "--out", str(run), *[a for s in TINY_TRAIN for a in ("--set", s)]]
    last = run / "checkpoints" / "last.pt"
    out = _run_filling("stages.train", args, last, small_fs / "filler")
    assert out.returncode == 2, out.stderr[-3000:]
    lines = _error_lines(out.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: folder {run}") and "disk full" in lines[0], out.stderr
    assert torch.load(last, weights_only=True)["epoch"] == 1 and not _temporaries(small_fs)

    (small_fs / "filler").unlink()
    lines = []   # the resumed run in this process, as the extraction test does
    fit(resolve(None, TINY_TRAIN), cache, run, log=lines.append)
    assert f"resuming {run} from epoch 1 (step " in "\n".join(lines), lines
    reference = tmp_path / "ref"
    fit(resolve(None, TINY_TRAIN), cache, reference, log=lambda m: None)
    a, b = (torch.load(p / "checkpoints" / "last.pt", weights_only=True) for p in (reference, run))
    assert a["epoch"] == b["epoch"] == 3
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
