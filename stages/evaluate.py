"""Evaluate a trained run (`groundedbert evaluate grounding`); the downstream tasks add their commands here.

    groundedbert evaluate grounding --cache cache/default --run runs/default \
        [--split test] [--grounding data/synth/grounding.json] \
        [--figures N --captions data/synth/captions.jsonl --images data/synth] [--set evaluate.mass=0.5]

Writes RUN_DIR/metrics.json: matching accuracy and ROC-AUC, retrieval R@1/5/10 both ways with the
number of candidates and the chance level, the collapse statistic and, with --grounding (either form of
grounding.json), the pointing game (per word with image-bootstrap intervals, per token, per phrase, by word
kind; on the plan at the evaluation's OT settings, on the plan at the common setting, and on the similarity
map), its baselines on the same trials, where the plan's mass goes, the headline margin over the object
prior, and the synonym precision@1 of h, g and an untrained control (all types and held-out types);
RUN_DIR/figures/*.png the alignment pictures; RUN_DIR/evaluate_config.json the resolved configuration.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.config import resolve, save_resolved
from pipeline.errors import ConfigError
from pipeline.io.atomic import write_json_atomic
from stages._common import ConfigOpt, SetOpt, friendly_errors

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)


@app.command("grounding", help="Matching, retrieval, pointing game and collapse of a trained run.")
@friendly_errors
def grounding(
    cache: Annotated[Path, typer.Option(help="Cache root holding the split folders.")],
    run: Annotated[Path, typer.Option(help="Run directory written by `groundedbert train`.")],
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    grounding: Annotated[Optional[Path], typer.Option(help="grounding.json (word spans and boxes, either form) for the pointing game.")] = None,
    figures: Annotated[Optional[int], typer.Option(help="Alignment PNGs to write to RUN/figures (default: evaluate.figures).")] = None,
    captions: Annotated[Optional[Path], typer.Option(help="Captions file the cache was extracted from (for --figures).")] = None,
    images: Annotated[Optional[Path], typer.Option(help="Images folder the cache was extracted from (for --figures).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Metrics file to write (default RUN/metrics.json); its "
                                                     "configuration goes beside it, metrics*.json -> evaluate_config*.json.")] = None,
    config: ConfigOpt = None,
    set: SetOpt = None,
) -> None:
    from pipeline.evaluation.grounding_eval import evaluate_run  # torch loads only when the command runs
    from pipeline.io.disk import full_disk_as_error

    resolved = resolve(config, set or [])
    count = resolved["evaluate"]["figures"] if figures is None else figures
    if count < 0:
        raise ConfigError(f"--figures must be 0 or more, got {count}")
    if figures is None and (captions is None or images is None):
        count = 0   # the params default asks for figures only where the source images were given
    metrics = evaluate_run(run, Path(cache) / split, resolved["evaluate"], grounding, figures=count,
                           figures_dir=Path(run) / "figures", captions_file=captions, images_root=images)
    out = Path(run) / "metrics.json" if out is None else Path(out)
    # One configuration file per metrics file, so that two splits evaluated into one run folder keep theirs.
    config_name = out.name.replace("metrics", "evaluate_config", 1) if "metrics" in out.name else "evaluate_config.json"
    with full_disk_as_error(out.parent, what=config_name):   # metrics.json and the figures check their own room
        save_resolved(resolved, out.parent, config_name)
    write_json_atomic(out, metrics)
    typer.echo(json.dumps(metrics, indent=2, sort_keys=True))


if __name__ == "__main__":  # `python -m stages.evaluate grounding ...`; glue and squad: stages/downstream.py
    from stages._common import run_module

    run_module(app, commands=True)
