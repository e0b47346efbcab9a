"""One downstream evaluation end to end: load a task, build its inputs (cached states for the probe,
token ids for fine-tuning), train baseline and grounded heads over several seeds, return the scores.

`cfg` is the resolved `downstream:` section of params.yaml.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from pipeline.downstream.features import glue_items, source_of, split_folder, squad_items, tokenize_pairs
from pipeline.downstream.finetune import finetune_glue, finetune_squad
from pipeline.downstream.glue import load_task, task_file
from pipeline.downstream.probe import build_bank, probe_glue, probe_squad
from pipeline.downstream.heads import random_like
from pipeline.downstream.squad import load_squad, make_windows
from pipeline.errors import ConfigError, DataError

MODES = ("probe", "finetune")


def _seeds(cfg: dict, n: int) -> list[int]:
    if n < 1:
        raise ConfigError(f"--seeds must be at least 1, got {n}")
    return [int(cfg["seed"]) + k for k in range(n)]


def cached_bank(items, encoder, cache_root: Path, *, task: str, split: str, source: dict, cfg: dict):
    """A probe's inputs: cached (extracted where missing), opened in memory or streamed by the budget."""
    return build_bank(items, encoder, split_folder(cache_root, task, split, source, encoder, cfg), source=source,
                      cfg=cfg)


def _check(cfg: dict, mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"--mode must be one of {MODES}, got {mode!r}")
    if cfg["pooling"] not in ("cls", "mean"):
        raise ConfigError(f"downstream.pooling must be cls or mean, got {cfg['pooling']!r}")


def _compare(run, grounding: nn.Module, seeds: list[int], cfg: dict) -> dict:
    """Scores per variant and seed: the head on h (baseline), on [h; f_g(h)] (grounded) and, with
    `downstream.control`, on [h; f(h)] for a freshly initialised f of f_g's shape (random_fg)."""
    variants = {"baseline": lambda s: None, "grounded": lambda s: grounding}
    if cfg["control"]:
        variants["random_fg"] = lambda s: random_like(grounding, 1_000_003 + s)
    return {"seeds": seeds, "results": {v: [run(make(s), s) for s in seeds] for v, make in variants.items()}}


def evaluate_glue(task: str, data_dir: Path, *, encoder, grounding: nn.Module, cfg: dict, mode: str,
                  seeds: int, cache_root: Path) -> dict:
    _check(cfg, mode)
    spec, train, evals = load_task(task, data_dir, cfg["on_error"])
    dtype = np.float32 if spec.is_regression else np.int64
    sets = {"train": train, **evals}
    labels = {k: np.asarray([e.label for e in v], dtype) for k, v in sets.items()}
    inputs = {k: tokenize_pairs(v, encoder.tokenizer, cfg["max_length"]) for k, v in sets.items()}
    files = {"train": "train.tsv", **{Path(f).stem: f for f in spec.eval_files}}
    if mode == "probe":
        banks = {k: cached_bank(glue_items(v, inputs[k]), encoder, cache_root, task=spec.name, split=k,
                                source=source_of(task_file(spec, data_dir, files[k]), kind="glue-pair",
                                                 task=spec.name, max_length=cfg["max_length"]), cfg=cfg)
                 for k, v in sets.items()}
        run = lambda g, seed: probe_glue(spec, (banks["train"], labels["train"]),  # noqa: E731
                                         {k: (banks[k], labels[k]) for k in evals}, g, cfg=cfg, seed=seed)
    else:
        run = lambda g, seed: finetune_glue(spec, encoder, (inputs["train"], labels["train"]),  # noqa: E731
                                            {k: (inputs[k], labels[k]) for k in evals}, g, cfg=cfg, seed=seed)
    seed_list = _seeds(cfg, seeds)
    return {"task": spec.name, **_compare(run, grounding, seed_list, cfg), "mode": mode,
            "examples": {k: len(v) for k, v in sets.items()},
            "truncated": {k: int(sum(v.truncated)) for k, v in inputs.items()},
            "pooling": cfg["pooling"], "tune_fg": bool(cfg["tune_fg"]) if mode == "probe" else True}


def squad_files(data: Path, dev: Path | None) -> tuple[Path, Path]:
    """`data` is a train file (its dev file given, or found beside it as train->dev in the name) or a
    folder holding one train-*.json and one dev-*.json, as SQuAD is distributed."""
    data = Path(data)
    if data.is_dir():
        found = {k: sorted(data.glob(f"{k}-*.json")) for k in ("train", "dev")}
        if dev is None and len(found["dev"]) == 1:
            dev = found["dev"][0]
        if len(found["train"]) != 1 or dev is None:
            raise DataError("a SQuAD folder needs exactly one train-*.json and one dev-*.json "
                            f"(found {[p.name for v in found.values() for p in v]}); or pass --data FILE --dev FILE",
                            file=str(data))
        return found["train"][0], Path(dev)
    if dev is None:
        guess = data.with_name(data.name.replace("train", "dev"))
        if "train" not in data.name or not guess.is_file():
            raise DataError("no dev file given and none found beside the train file; pass --dev FILE", file=str(data))
        dev = guess
    return data, Path(dev)


def evaluate_squad(data: Path, dev: Path | None, *, version: str, encoder, grounding: nn.Module, cfg: dict,
                   mode: str, seeds: int, cache_root: Path) -> dict:
    _check(cfg, mode)
    train_path, dev_path = squad_files(data, dev)
    train = load_squad(train_path, version, cfg["on_error"])
    dev_set = load_squad(dev_path, version, cfg["on_error"])
    if train.version != dev_set.version:
        raise DataError(f"the train file is SQuAD {train.version} but the dev file is {dev_set.version}; "
                        "pass --version to read both as one version", file=str(dev_path))
    knobs = {"max_length": cfg["squad_max_length"], "stride": cfg["stride"]}
    windows = {k: make_windows(s.questions, encoder.tokenizer, **knobs) for k, s in (("train", train), ("dev", dev_set))}
    if mode == "probe":
        banks = {k: cached_bank(squad_items(windows[k]), encoder, cache_root, task=f"squad{train.version}", split=k,
                                source=source_of(p, kind="squad-window", version=train.version, **knobs), cfg=cfg)
                 for k, p in (("train", train_path), ("dev", dev_path))}
        gold = (np.array([w.start for w in windows["train"]]), np.array([w.end for w in windows["train"]]))
        run = lambda g, seed: probe_squad((banks["train"], *gold), (banks["dev"], windows["dev"], dev_set.questions),  # noqa: E731
                                          g, version=train.version, cfg=cfg, seed=seed)
    else:
        run = lambda g, seed: finetune_squad(encoder, windows["train"], (windows["dev"], dev_set.questions), g,  # noqa: E731
                                             version=train.version, cfg=cfg, seed=seed)
    return {"task": f"squad{train.version}", "mode": mode, **_compare(run, grounding, _seeds(cfg, seeds), cfg),
            "examples": {"train_questions": len(train.questions), "dev_questions": len(dev_set.questions),
                         "train_windows": len(windows["train"]), "dev_windows": len(windows["dev"])},
            "tune_fg": bool(cfg["tune_fg"]) if mode == "probe" else True}
