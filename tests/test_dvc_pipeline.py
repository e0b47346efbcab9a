"""The DVC pipeline in a temporary copy of the repository, with tiny settings: `dvc repro` runs every
stage, and an experiment that changes a training key re-runs training and evaluation but not extraction."""
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.encoders.tiny import TINY_IMAGE_MODEL, TINY_IMAGE_SIZE

REPO = Path(__file__).resolve().parent.parent


def copy_repo(dest: Path) -> None:
    """Tracked files plus untracked ones git does not ignore: the working tree as a clone would see it,
    without the venv, caches, runs or bytecode."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout.split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file() and "__pycache__" not in rel:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def tiny_params(repo: Path, text_model: str) -> None:
    """The params delta: a few images, tiny encoders, two short epochs."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(images=30, captions_per_image=2)
    params["extract"].update(text_model=text_model, image_model=TINY_IMAGE_MODEL, image_size=TINY_IMAGE_SIZE,
                             max_length=32, num_workers=0, device="cpu")
    params["train"].update(d_g=8, hidden=16, batch_size=8, epochs=2, warmup_steps=2, num_threads=1, device="cpu")
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_repro_then_experiment_reuses_the_cache(tmp_path):
    from pipeline.encoders.tiny import make_tiny_text_model

    repo = tmp_path / "repo"
    copy_repo(repo)
    # Every stage re-runs anyway (tiny params), and without the shipped lock's 3 000 lines of hashes DVC
    # re-parses a short file each time it reads or writes it (that parsing was most of DVC's own time).
    (repo / "dvc.lock").unlink()
    # `weights convert --check`, onnxruntime's comparison and most of the stage's time, runs in
    # tests/test_dinov2_conversion.py.
    dvc_yaml = (repo / "dvc.yaml").read_text()
    convert = "python -m stages.weights convert --out weights/dinov2_vits14.safetensors"
    assert dvc_yaml.count(convert + "\n") == 1
    (repo / "dvc.yaml").write_text(dvc_yaml.replace(convert + "\n", convert + " --no-check\n"))
    tiny_params(repo, make_tiny_text_model(tmp_path / "tiny-bert"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # dvc.yaml runs `python -m stages.<module>`: make `python` this interpreter, whatever PATH holds.
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python").chmod(stat.S_IRWXU)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1", "GROUNDEDBERT_WEIGHTS": str(repo / "weights")}

    def sh(*cmd):
        result = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{cmd}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        return result.stdout + result.stderr

    dvc = [sys.executable, "-m", "dvc"]
    sh("git", "init", "-q")
    sh("git", "add", "-A")
    sh("git", "commit", "-q", "-m", "copy")
    # The grounding chain; the downstream stages (GLUE/SQuAD heads) have their own end-to-end tests.
    out = sh(*dvc, "repro", "evaluate")
    for stage in ("synth", "convert_weights", "extract@train", "extract@val", "extract@test", "train", "evaluate"):
        assert f"Running stage '{stage}'" in out, out
    metrics = json.loads((repo / "runs/default/metrics.json").read_text())
    assert metrics["pointing"]["plan"]["token"]["trials"] > 0
    assert sorted(p.name for p in (repo / "runs/default/figures").glob("*.png"))
    manifests = {s: (repo / f"cache/default/{s}/manifest.json").stat().st_mtime_ns for s in ("train", "val", "test")}

    sh("git", "add", "-A")
    sh("git", "commit", "-q", "-m", "repro")
    out = sh(*dvc, "exp", "run", "evaluate", "-S", "train.lambda_ot=0.1")
    assert "Running stage 'train'" in out and "Running stage 'evaluate'" in out, out
    assert "Running stage 'extract" not in out and "Running stage 'synth'" not in out, out
    assert {s: (repo / f"cache/default/{s}/manifest.json").stat().st_mtime_ns for s in manifests} == manifests
    assert json.loads((repo / "runs/default/config.json").read_text())["train"]["lambda_ot"] == 0.1

    # An experiment in a workspace of its own (what `dvc exp run --queue` does): its params.yaml, not the
    # one beside the installed package or in this checkout, must decide the run.
    out = sh(*dvc, "exp", "run", "--temp", "evaluate", "-S", "train.mass=1.0")
    assert " mass=1.0 " in out, out
    assert "Running stage 'extract" not in out, out

    # The experiment's own metrics are readable afterwards (they live in DVC's cache, not in git).
    shown = json.loads(sh(*dvc, "exp", "show", "--json"))
    found = [r["data"] for rev in shown for e in (rev.get("experiments") or []) for r in e["revs"]
             if r["data"]["params"]["params.yaml"]["data"]["train"]["mass"] == 1.0]
    assert found and "pointing" in found[0]["metrics"]["runs/default/metrics.json"]["data"], json.dumps(shown)[:3000]
    sh(*dvc, "plots", "show", "--json")
