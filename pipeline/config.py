"""Configuration in layers: `params.yaml` defaults -> an experiment file of deltas -> `--set key=value`.

The resolved configuration is a plain nested dict; `save_resolved` writes it beside every output so a
run can always be traced back to the exact knobs that made it.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Iterable

import yaml

from pipeline.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULTS_FILE = REPO_ROOT / "params.yaml"
PARAMS_ENV = "GROUNDEDBERT_PARAMS"


def defaults_file() -> Path:
    """Which params.yaml holds the defaults: $GROUNDEDBERT_PARAMS, else the one in the working directory,
    else the one beside this package.

    The working directory wins because that is where DVC runs a stage: `dvc exp run -S train.mass=1`
    edits the params.yaml of the experiment's own workspace, and the installed package's copy must not
    silently shadow it."""
    if os.environ.get(PARAMS_ENV):
        return Path(os.environ[PARAMS_ENV])
    local = Path.cwd() / "params.yaml"
    return local if local.exists() else DEFAULTS_FILE


def load_defaults(path: Path | None = None) -> dict:
    path = Path(path) if path is not None else defaults_file()
    if not path.exists():
        raise ConfigError(f"file {path}: defaults file not found")
    with open(path) as f:
        try:
            return yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"file {path}: invalid YAML: {e}") from e


def merge(base: dict, delta: dict, _path: str = "") -> dict:
    """Deep-merge `delta` into a copy of `base`; unknown keys are an error (a typo must not pass silently)."""
    out = copy.deepcopy(base)
    for key, value in delta.items():
        where = f"{_path}{key}"
        if key not in out:
            raise ConfigError(f"unknown configuration key {where!r}")
        if isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"configuration key {where!r} is a section, got {value!r}")
            out[key] = merge(out[key], value, where + ".")
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.mass=0.3' -> (['train', 'mass'], 0.3); the value is parsed as YAML (numbers, bools, lists)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def set_key(config: dict, keys: list[str], value: Any) -> None:
    node = config
    for i, k in enumerate(keys[:-1]):
        if not isinstance(node.get(k), dict):
            raise ConfigError(f"unknown configuration section {'.'.join(keys[: i + 1])!r}")
        node = node[k]
    if keys[-1] not in node:
        raise ConfigError(f"unknown configuration key {'.'.join(keys)!r}")
    old = node[keys[-1]]
    # Keep the declared type: a float knob given as "1" stays a float, a typo like "abc" for a number fails.
    if isinstance(old, bool) or old is None or isinstance(old, (dict, list)):
        node[keys[-1]] = value
    elif isinstance(old, (int, float)) and not isinstance(value, bool):
        try:
            node[keys[-1]] = type(old)(value) if not (isinstance(old, int) and isinstance(value, float)) else value
        except (TypeError, ValueError):
            raise ConfigError(f"configuration key {'.'.join(keys)!r} wants a number, got {value!r}") from None
    else:
        node[keys[-1]] = value


def resolve(experiment: Path | None = None, overrides: Iterable[str] = (), defaults: Path | None = None) -> dict:
    config = load_defaults(defaults)
    if experiment is not None:
        config = merge(config, load_defaults(Path(experiment)))
    for text in overrides:
        keys, value = parse_override(text)
        set_key(config, keys, value)
    return config


def save_resolved(config: dict, out_dir: Path, name: str = "config.json") -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path
