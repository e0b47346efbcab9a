"""Evaluate a trained run (`groundedbert evaluate grounding`); the downstream tasks add their commands here.

    groundedbert evaluate grounding --cache cache/default --run runs/default \
        [--split test] [--grounding data/synth/grounding.json]

Writes RUN_DIR/metrics.json: matching accuracy and ROC-AUC, retrieval R@1/5/10 both ways with the
number of candidates and the chance level, the pointing game of the transport plan (with --grounding)
and the collapse statistic; RUN_DIR/evaluate_config.json holds the resolved evaluation configuration.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.config import resolve, save_resolved
from stages._common import ConfigOpt, SetOpt, friendly_errors

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)


@app.command("grounding", help="Matching, retrieval, pointing game and collapse of a trained run.")
@friendly_errors
def grounding(
    cache: Annotated[Path, typer.Option(help="Cache root holding the split folders.")],
    run: Annotated[Path, typer.Option(help="Run directory written by `groundedbert train`.")],
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    grounding: Annotated[Optional[Path], typer.Option(help="grounding.json (word spans and boxes) for the pointing game.")] = None,
    config: ConfigOpt = None,
    set: SetOpt = None,
) -> None:
    from pipeline.evaluation.grounding_eval import evaluate_run  # torch loads only when the command runs

    resolved = resolve(config, set or [])
    metrics = evaluate_run(run, Path(cache) / split, resolved["evaluate"], grounding)
    save_resolved(resolved, run, "evaluate_config.json")
    (Path(run) / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    typer.echo(json.dumps(metrics, indent=2, sort_keys=True))
