"""Stage two: train f_g, f_v and f_c from a feature cache (`groundedbert train`).

    groundedbert train --cache cache/default --out runs/default [--config experiments/lambda0.yaml] \
        [--set train.mass=0.3 ...] [--grounding data/synth/grounding.json]

Reads CACHE/train (training) and CACHE/val (early stopping). Writes RUN_DIR/config.json, checkpoints
(RUN_DIR/checkpoints/{last,best}.pt) and dvclive metrics (RUN_DIR/dvclive/; with --grounding, the
validation pointing game per epoch too); see
pipeline/training/checkpoint.py for the layout. A run directory holding a checkpoint is resumed
unless --no-resume. One training run at a time in a run directory: a second one stops and names the first
(or, with --wait, waits for it and then resumes from its last checkpoint).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.config import resolve
from stages._common import ConfigOpt, SetOpt, friendly_errors

BUSY_HINT = "wait for it to finish, or run again with --wait to resume from its checkpoint once it has"


@friendly_errors
def train(
    cache: Annotated[Path, typer.Option(help="Cache root holding train/ and val/ split folders.")],
    out: Annotated[Path, typer.Option(help="Run directory: checkpoints, dvclive metrics, resolved config.")],
    config: ConfigOpt = None,
    set: SetOpt = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoints/last.pt when it exists.")] = True,
    grounding: Annotated[Optional[Path], typer.Option(help="grounding.json: log the validation pointing game per epoch.")] = None,
    wait: Annotated[bool, typer.Option(help="Another training run holds OUT: wait for it to finish, then resume from its checkpoint (default: stop and name it).")] = False,
) -> None:
    from pipeline.io.atomic import remove_temporaries
    from pipeline.io.disk import full_disk_as_error
    from pipeline.io.locks import lock_folder
    from pipeline.training.checkpoint import checkpoint_dir
    from pipeline.training.fit import fit  # torch and dvclive load only when the command runs

    resolved = resolve(config, set or [])
    t = resolved["train"]
    # The knobs a sweep varies, up front: a log then shows which experiment it is.
    typer.echo(f"objective: lambda_ot={t['lambda_ot']} mass={t['mass']} epsilon={t['epsilon']} "
               f"patch_capacity={t['patch_capacity']} local={t['local_contrastive_weight']} d_g={t['d_g']} "
               f"hinge={t['ot_hinge_weight']} solver={t['ot_solver']} negatives={t['negatives']}/{t['negative_mode']}",
               err=True)
    hook = None
    if grounding is not None:
        from pipeline.evaluation.alignment import validation_pointing
        from pipeline.evaluation.grounding_eval import load_grounding
        hook = validation_pointing(load_grounding(grounding), resolved)
    # Checkpoints check their own room; this names the folder when dvclive or config.json find the disk full.
    with lock_folder(out, task="training run", wait=wait, hint=BUSY_HINT, log=lambda m: typer.echo(m, err=True)), \
            full_disk_as_error(out):
        remove_temporaries(out, checkpoint_dir(out))   # a killed run's half-written config or checkpoint
        summary = fit(resolved, cache, out, resume=resume, log=lambda m: typer.echo(m, err=True), epoch_metrics=hook)
    typer.echo(json.dumps(summary))


if __name__ == "__main__":
    from stages._common import run_module

    run_module(train)
