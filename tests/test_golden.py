"""Golden numbers: train + evaluate on a tiny frozen cache, every metric asserted to a relative 1e-5.

Any change to the objective, the solver, the model, the schedule, the metrics, a default in params.yaml or the
fake cache (tests/stage2_fixtures.py) moves some of these numbers; a change meant to leave results alone must
leave them alone. When a change is meant to move them, regenerate the file and commit it with the change:

    GROUNDEDBERT_UPDATE_GOLDEN=1 HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/test_golden.py

and read its diff as part of the review (docs/development.md, "The golden test").
"""
import json
import math
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.config import REPO_ROOT
from stage2_fixtures import TINY_TRAIN, make_cache
from stages.cli import app

GOLDEN = Path(__file__).parent / "golden" / "train_evaluate.json"
UPDATE = os.environ.get("GROUNDEDBERT_UPDATE_GOLDEN") == "1"
# 1e-5: the same code on another CPU (the file was written on an AMD EPYC; an Intel Xeon moved one mass share by
# 1.2e-6, relative) rounds differently, while a change to the objective, the solver or a default moves the
# numbers by far more than this (the same test, 2026-12-06).
REL, ABS = 1e-5, 1e-9
# The solver stops once the marginal error is below its tolerance; what is left below it is rounding, which
# differs between CPUs and between equivalent orders of the same sums: two errors both within the tolerance agree.
SOLVER_TOL = 1e-6
# Pointing-game truth for two test captions (their character spans in the fake cache are 4k..4k+3).
GROUNDING = {"cap000_0": [{"start": 0, "end": 7, "text": "x", "box": [0, 0, 32, 32]}],
             "cap001_1": [{"start": 4, "end": 11, "text": "y", "box": [0, 32, 32, 64]}],
             "cap002_0": [{"start": 8, "end": 15, "text": "z", "box": [16, 16, 48, 48]}]}


def run_golden(root: Path) -> dict:
    cache, run = make_cache(root / "cache"), root / "run"
    (root / "grounding.json").write_text(json.dumps(GROUNDING))
    # The OT loss on (the paper's weight; params.yaml's default is 0), so that the file also pins the objective's
    # OT terms and the batched solver inside training.
    sets = [x for s in TINY_TRAIN + ["train.epochs=3", "train.seed=0", "train.device=cpu", "train.lambda_ot=0.1"]
            for x in ("--set", s)]
    runner = CliRunner()
    trained = runner.invoke(app, ["train", "--cache", cache, "--out", run, "--no-resume", *sets])
    assert trained.exit_code == 0, trained.output
    evaluated = runner.invoke(app, ["evaluate", "grounding", "--cache", cache, "--run", run,
                                    "--grounding", root / "grounding.json"])
    assert evaluated.exit_code == 0, evaluated.output
    return {"train": json.loads((run / "dvclive" / "metrics.json").read_text()),
            "evaluate": json.loads((run / "metrics.json").read_text())}


def differences(got, want, path: str = "") -> list[str]:
    """Every place where `got` and `want` differ: a missing or extra key, a type, a number beyond REL/ABS."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = [f"{path}{k}: missing" for k in want if k not in got]
        out += [f"{path}{k}: not in the golden file" for k in got if k not in want]
        for k in (k for k in want if k in got):
            out += differences(got[k], want[k], f"{path}{k}.")
        return out
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in differences(g, w, f"{path}{i}.")]
    numbers = (int, float)
    if isinstance(want, numbers) and isinstance(got, numbers) and type(want) is not bool and type(got) is not bool:
        if math.isclose(got, want, rel_tol=REL, abs_tol=ABS):
            return []
        if path.endswith("marginal_error.") and max(got, want) <= SOLVER_TOL:
            return []
    elif got == want:
        return []
    return [f"{path.rstrip('.')}: {got!r}, golden {want!r}"]


def test_train_and_evaluate_give_the_golden_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("GROUNDEDBERT_PARAMS", str(REPO_ROOT / "params.yaml"))
    got = run_golden(tmp_path)
    if UPDATE:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
        pytest.skip(f"rewrote {GOLDEN}: review its diff")
    want = json.loads(GOLDEN.read_text())
    diffs = differences(got, want)
    assert not diffs, "numbers moved (see this file's docstring):\n" + "\n".join(diffs)


def test_the_comparison_catches_a_drift():
    """The checker itself: a change past the tolerance, a missing key and a changed count all show."""
    want = {"a": {"x": 0.5, "n": 3}, "b": [1.0, 2.0], "s": "sinkhorn"}
    assert differences({"a": {"x": 0.5 * (1 + REL / 2), "n": 3}, "b": [1.0, 2.0], "s": "sinkhorn"}, want) == []
    assert differences({"a": {"x": 0.5 * (1 + 10 * REL), "n": 3}, "b": [1.0, 2.0], "s": "sinkhorn"}, want) == [
        f"a.x: {0.5 * (1 + 10 * REL)!r}, golden 0.5"]
    assert differences({"a": {"n": 4}, "b": [1.0, 2.0], "s": "pot"}, want) == [
        "a.x: missing", "a.n: 4, golden 3", "s: 'pot', golden 'sinkhorn'"]
