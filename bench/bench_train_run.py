"""Whole training runs, timed: `groundedbert train` as `dvc repro` runs it, once per variant, alternated.

    python bench/bench_train_run.py --cache CACHE --grounding GROUNDING.json [--rounds 1] \
        --variant "before=dense,train.num_threads=1,train.val_pointing_every=1" --variant "after="

Each variant is a comma-separated list of `--set` overrides (train.KEY=VALUE); `code=DIR` runs the code of another
checkout (`git worktree add DIR COMMIT`: the commit before a change), with this interpreter; `dense` first swaps the token-wise
contrastive term for the dense einsum + amax it replaced (bench_step.py's `dense_token_contrastive`, the same
maths), so a run before that change can be timed beside one after it. Each run is its own process
(`python -m stages.train --no-resume`, with the validation pointing game through --grounding, as dvc.yaml's
train stage), its wall time and CPU time (user + system, both threads) measured around the process: on a shared machine the
CPU time moves less with the others' load than the wall time. Prints one JSON line per run: the variant, seconds,
the training log's captions/s per epoch, and the last epoch's validation metrics from dvclive, so that
variants meant to be the same maths can be compared on their results as well as their time.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def child(argv: list[str]) -> None:
    """`python -m stages.train ARGV` in this process, with the dense contrastive term swapped in."""
    import pipeline.losses as losses
    from bench_step import dense_token_contrastive
    import stages.train as stage
    from pipeline.training import engine  # noqa: F401  (imports every module that holds the term)
    original = losses.token_contrastive
    swapped = [m for m in list(sys.modules.values()) if getattr(m, "__name__", "").startswith("pipeline.")
               and getattr(m, "token_contrastive", None) is original]
    for module in swapped:
        module.token_contrastive = dense_token_contrastive
    print(f"dense token_contrastive in {', '.join(m.__name__ for m in swapped)}", file=sys.stderr)
    from stages._common import run_module
    sys.argv = ["stages.train", *argv]
    run_module(stage.train)


def run(variant: str, sets: list[str], args, out: Path) -> dict:
    dense = "dense" in sets
    # code=DIR: run that checkout's code (a `git worktree add DIR COMMIT` of the commit before a change), so that
    # before and after are timed in one run, alternated.
    code = next((Path(s.split("=", 1)[1]) for s in sets if s.startswith("code=")), ROOT)
    overrides = [s for s in sets if s and s != "dense" and not s.startswith("code=")]
    train_args = ["--cache", str(args.cache.resolve()), "--out", str(out), "--no-resume", "--grounding",
                  str(args.grounding.resolve())]
    for s in overrides:
        train_args += ["--set", s]
    cmd = ([sys.executable, __file__, "--child", *train_args] if dense
           else [sys.executable, "-m", "stages.train", *train_args])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    load = os.getloadavg()[0]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"variant {variant} failed:\n{done.stderr[-3000:]}")
    rates = [float(x) for x in re.findall(r"(\d+) captions/s", done.stderr)]
    metrics = json.loads((out / "dvclive" / "metrics.json").read_text())
    val = {k: v for k, v in metrics.get("val", {}).items()}
    return {"variant": variant, "sets": sets, "code": str(code), "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), "load_at_start": round(load, 2),
            "load_at_end": round(os.getloadavg()[0], 2), "captions_per_s_per_epoch": rates,
            "epochs": metrics.get("epoch"), "dense_in": re.findall(r"dense token_contrastive in (.*)", done.stderr),
            "val": val}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--grounding", type=Path, required=True)
    ap.add_argument("--variant", action="append", required=True, help="NAME=set1,set2 (see the module docstring)")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    from machine import machine_info
    print(json.dumps({"machine": machine_info()}), flush=True)
    variants = [(v.split("=", 1)[0], v.split("=", 1)[1].split(",")) for v in args.variant]
    with tempfile.TemporaryDirectory(prefix="gb-train-run-") as tmp:
        for r in range(args.rounds):
            for name, sets in variants:
                print(json.dumps({"round": r, **run(name, sets, args, Path(tmp) / f"{name}-{r}")}), flush=True)


if __name__ == "__main__":
    main()
