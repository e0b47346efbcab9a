"""Downstream text tasks with a trained run's f_g: baseline `h` vs grounded `[h; f_g(h)]`.

    groundedbert evaluate glue  --task NAME --data GLUE/TASK_DIR --run RUN_DIR --out DIR [--mode probe|finetune] [--seeds N]
    groundedbert evaluate squad --data FILE_OR_DIR [--dev FILE] --run RUN_DIR --out DIR [--mode ...] [--version auto|1.1|2.0]
    groundedbert evaluate downstream --data DIR --run RUN_DIR --out DIR [--tasks cola,sst2,...] [--mode ...]
    groundedbert data glue-fixtures OUT_DIR

`evaluate downstream` runs every GLUE task and both SQuAD versions of a folder laid out as GLUE and SQuAD are
distributed (DIR/glue/CoLA/, ..., DIR/squad/train-v1.1.json), each into OUT/<task>/ exactly as `evaluate glue` and
`evaluate squad` would: torch and transformers are imported once, not per task (about 6 s a process on 2 cores,
most of a task's time on the fixtures), and in probe mode the tasks run side by side in worker processes forked
from that one, a task per core (`--jobs`; pipeline/downstream/task_pool.py).

The text encoder and layer are the run's own (its config's `extract` section), so the features are
the ones f_g was trained on. OUT/comparison.json and OUT/comparison.md hold the comparison (mean ±
std over seeds); OUT/downstream_config.json the resolved configuration.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.config import resolve, save_resolved, validate_section
from stages._common import ConfigOpt, SetOpt, friendly_errors

ModeOpt = Annotated[str, typer.Option(help="probe: frozen encoder, cached states, train the head; "
                                            "finetune: encoder + f_g + head trained on raw text.")]
SeedsOpt = Annotated[Optional[int], typer.Option(help="Seeds per variant (default: downstream.seeds).")]
PoolingOpt = Annotated[Optional[str], typer.Option(help="GLUE sentence vector: cls or mean (default: downstream.pooling).")]
CacheOpt = Annotated[Optional[Path], typer.Option(help="Probe mode: cache root for task states (default: downstream.cache).")]
RunOpt = Annotated[Path, typer.Option(help="Run directory written by `groundedbert train` (its f_g and encoder).")]
OutOpt = Annotated[Path, typer.Option(help="Folder for comparison.json and comparison.md.")]


def _setup(run: Path, config, overrides, *, seeds, pooling, max_length_key: str):
    """Resolved config, the downstream section, the run's text encoder and its f_g: loaded as
    GroundedEncoder.from_run loads them (one loader), so a probe and a user get the same vectors."""
    from pipeline.grounded.encoder import load_run_encoder
    from pipeline.runtime import pick_device

    resolved = resolve(config, overrides or [])
    cfg = resolved["downstream"]
    if pooling is not None:   # checked like the configuration, before the run and the encoder load
        cfg = resolved["downstream"] = validate_section("downstream", {**cfg, "pooling": pooling}, "from --pooling")
    encoder, f_g, checkpoint = load_run_encoder(run, max_length=cfg[max_length_key], device=pick_device(cfg["device"]))
    ex = checkpoint["config"]["extract"]
    return resolved, cfg, encoder, f_g, (seeds if seeds is not None else cfg["seeds"]), ex


def _finish(out: Path, payload: dict, resolved: dict, run: Path, ex: dict) -> None:
    from pipeline.downstream.report import write_comparison

    payload.update(run=str(run), text_model=ex["text_model"], text_layer=ex["text_layer"])
    save_resolved(resolved, out, "downstream_config.json")
    _, md = write_comparison(out, payload)
    typer.echo(md.read_text())


def _glue(task: str, data: Path, run: Path, out: Path, *, mode, seeds, pooling, cache, config, overrides) -> None:
    from pipeline.downstream.tasks import evaluate_glue

    resolved, cfg, encoder, f_g, n, ex = _setup(run, config, overrides, seeds=seeds, pooling=pooling,
                                                max_length_key="max_length")
    payload = evaluate_glue(task, data, encoder=encoder, grounding=f_g, cfg=cfg, mode=mode, seeds=n,
                            cache_root=Path(cache or cfg["cache"]))
    _finish(out, payload, resolved, run, ex)


def _squad(data: Path, dev: Path | None, run: Path, out: Path, *, mode, seeds, version, cache, config,
           overrides) -> None:
    from pipeline.downstream.tasks import evaluate_squad

    resolved, cfg, encoder, f_g, n, ex = _setup(run, config, overrides, seeds=seeds, pooling=None,
                                                max_length_key="squad_max_length")
    payload = evaluate_squad(data, dev, version=version, encoder=encoder, grounding=f_g, cfg=cfg, mode=mode,
                             seeds=n, cache_root=Path(cache or cfg["cache"]))
    _finish(out, payload, resolved, run, ex)


@friendly_errors
def glue(
    task: Annotated[str, typer.Option(help="cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte or wnli (GLUE's folder names work too).")],
    data: Annotated[Path, typer.Option(help="The task's folder as GLUE distributes it (train.tsv, dev.tsv, ...).")],
    run: RunOpt,
    out: OutOpt,
    mode: ModeOpt = "probe",
    seeds: SeedsOpt = None,
    pooling: PoolingOpt = None,
    cache: CacheOpt = None,
    config: ConfigOpt = None,
    set: SetOpt = None,
) -> None:
    _glue(task, data, run, out, mode=mode, seeds=seeds, pooling=pooling, cache=cache, config=config, overrides=set)


@friendly_errors
def squad(
    data: Annotated[Path, typer.Option(help="train-v1.1.json / train-v2.0.json (dev file beside it), or a folder holding both.")],
    run: RunOpt,
    out: OutOpt,
    dev: Annotated[Optional[Path], typer.Option(help="The dev file, when it is not beside the train file.")] = None,
    mode: ModeOpt = "probe",
    seeds: SeedsOpt = None,
    version: Annotated[str, typer.Option(help="auto (from the file), 1.1 or 2.0.")] = "auto",
    cache: CacheOpt = None,
    config: ConfigOpt = None,
    set: SetOpt = None,
) -> None:
    _squad(data, dev, run, out, mode=mode, seeds=seeds, version=version, cache=cache, config=config, overrides=set)


SQUAD_VERSIONS = ("1.1", "2.0")


def suite_tasks(data: Path, tasks: str | None) -> dict[str, Path]:
    """Task name -> its input in DATA (a GLUE folder, or a SQuAD train file with its dev file beside it), in the
    suite's order; every name known and every input present before anything runs."""
    from pipeline.downstream.glue import FOLDERS
    from pipeline.errors import DataError

    inputs = {name: data / "glue" / folder for name, folder in FOLDERS.items()}
    inputs.update({f"squad{v}": data / "squad" / f"train-v{v}.json" for v in SQUAD_VERSIONS})
    names = list(inputs) if tasks is None else [t.strip() for t in tasks.split(",") if t.strip()]
    unknown = [name for name in names if name not in inputs]
    if unknown or not names:
        raise DataError(f"--tasks names {unknown or 'nothing'}; the suite's tasks are {', '.join(inputs)}")
    missing = [str(inputs[name]) for name in names if not inputs[name].exists()]
    if missing:
        raise DataError(f"the suite's inputs are missing: {', '.join(missing)} (a folder as `groundedbert data "
                        "glue-fixtures` writes it: glue/<GLUE folder>/, squad/train-v1.1.json + dev-v1.1.json, ...)",
                        file=str(data))
    return {name: inputs[name] for name in names}


@friendly_errors
def suite(
    data: Annotated[Path, typer.Option(help="A folder holding glue/<GLUE folder>/ and squad/train-v*.json with their "
                                            "dev files, as `groundedbert data glue-fixtures` writes it.")],
    run: RunOpt,
    out: Annotated[Path, typer.Option(help="Folder for one sub-folder per task: OUT/cola, ..., OUT/squad2.0.")],
    tasks: Annotated[Optional[str], typer.Option(help="Comma-separated subset, e.g. cola,squad2.0 (default: all "
                                                      "nine GLUE tasks and both SQuAD versions).")] = None,
    mode: ModeOpt = "probe",
    seeds: SeedsOpt = None,
    pooling: PoolingOpt = None,
    cache: CacheOpt = None,
    config: ConfigOpt = None,
    set: SetOpt = None,
    jobs: Annotated[int, typer.Option(min=0, help="Tasks run side by side, each in a worker process (0: one per "
                                                  "torch thread in probe mode, whose heads train on one thread "
                                                  "each; one at a time in finetune mode or on a GPU).")] = 0,
) -> None:
    """Every task loads the run's encoder and f_g afresh (finetune mode trains them), so each result is the one its
    own `evaluate glue` / `evaluate squad` gives, whether the tasks run one after another or side by side."""
    from pipeline.downstream.task_pool import auto_jobs, run_side_by_side

    inputs = suite_tasks(data, tasks)
    calls = [(name, path, run, out / name, dict(mode=mode, seeds=seeds, pooling=pooling, cache=cache, config=config,
                                                 overrides=set)) for name, path in inputs.items()]
    jobs = jobs or auto_jobs(mode, len(calls))
    if jobs == 1:
        for call in calls:
            typer.echo(f"== {call[0]}")
            _suite_task(*call)
        return
    longest = [i for i, call in enumerate(calls) if call[0].startswith("squad")]   # SQuAD's windows: ~7x a GLUE task
    names = [call[0] for call in calls]
    for name, printed in zip(names, run_side_by_side(_suite_task, calls, jobs, first=longest, labels=names)):
        typer.echo(f"== {name}")
        typer.echo(printed, nl=False)


def _suite_task(name: str, path: Path, run: Path, out: Path, options: dict) -> None:
    """One task of the suite, as its own command runs it (module level, so that a worker process can call it)."""
    if name.startswith("squad"):
        options = {k: v for k, v in options.items() if k != "pooling"}
        _squad(path, None, run, out, version="auto", **options)
    else:
        _glue(name, path, run, out, **options)


@friendly_errors
def fixtures(
    out: Annotated[Path, typer.Argument(help="Folder to write glue/<TASK>/*.tsv and squad/*.json into.")],
    train: Annotated[int, typer.Option(help="Training rows per GLUE task (SQuAD: a third as many paragraphs).")] = 48,
    dev: Annotated[int, typer.Option(help="Rows per GLUE evaluation file.")] = 24,
    seed: Annotated[int, typer.Option(help="Seed of the generated text.")] = 0,
) -> None:
    """Small GLUE and SQuAD files in the official formats, with a learnable signal."""
    from pipeline.downstream.fixtures import write_all

    for name, path in write_all(out, train, dev, seed).items():
        typer.echo(f"{name}: {path}")


# name -> (command, help); groundedbert puts glue and squad under `evaluate`, glue-fixtures under `data`.
COMMANDS = {
    "glue": (glue, "GLUE task: a head on h alone vs on h concatenated with f_g(h) (probe or finetune)."),
    "squad": (squad, "SQuAD v1.1/v2.0: start/end heads on h alone vs on h concatenated with f_g(h)."),
    "downstream": (suite, "Every GLUE task and both SQuAD versions of a folder, side by side on the cores."),
    "glue-fixtures": (fixtures, "Small GLUE and SQuAD files in the official formats."),
}


def register(app: typer.Typer, *names: str) -> None:
    for name in names:
        command, help_ = COMMANDS[name]
        app.command(name, help=help_)(command)


if __name__ == "__main__":  # `python -m stages.downstream glue|squad|downstream|glue-fixtures ...`, as groundedbert
    from stages._common import run_module

    app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
    register(app, *COMMANDS)
    run_module(app)
