"""Configuration in layers: `params.yaml` defaults -> an experiment file of deltas -> `--set key=value`.

Every layer is checked against one schema (pipeline/config_schema.py) before anything loads. The resolved
configuration is a plain nested dict; `save_resolved` writes it beside every output so a run can always be
traced back to the exact knobs that made it.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import ValidationError

from pipeline.config_schema import Config, text_keys
from pipeline.errors import ConfigError
from pipeline.io.atomic import write_json_atomic

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULTS_FILE = REPO_ROOT / "params.yaml"
PARAMS_ENV = "GROUNDEDBERT_PARAMS"


class _Loader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, where `1e-12` (no dot) is a string; YAML 1.2, which DVC's `-S` writes
    with, reads it as a number. Read it as a number here too, so `--set train.ot_tol=1e-12` works."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _yaml(stream):
    return yaml.load(stream, Loader=_Loader)


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
    """One layer as written (params.yaml by default, or an experiment file), not yet checked."""
    path = Path(path) if path is not None else defaults_file()
    if not path.exists():
        raise ConfigError(f"file {path}: configuration file not found")
    with open(path) as f:
        try:
            layer = _yaml(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"file {path}: invalid YAML: {e}") from e
    if not isinstance(layer, dict):
        raise ConfigError(f"file {path}: expected sections of key: value pairs, got a {type(layer).__name__}")
    return layer


def merge(base: dict, delta: dict, origins: dict, source: str, _path: str = "") -> dict:
    """Deep-merge `delta` into a copy of `base`, noting in `origins` where each key it sets came from.
    Unknown keys and wrong types are left to the schema, which names them with their source."""
    out = copy.deepcopy(base)
    for key, value in delta.items():
        where = f"{_path}{key}"
        if isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = merge(out[key], value, origins, source, where + ".")
        else:
            out[key] = copy.deepcopy(value)
            origins[where] = source
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.mass=0.3' -> (['train', 'mass'], 0.3); the value is parsed as YAML (numbers, bools, null),
    except for free-text keys (paths, model names), which take it verbatim."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    keys = key.strip().split(".")
    if ".".join(keys) in text_keys() or raw == "":
        return keys, raw
    try:
        return keys, _yaml(raw)
    except yaml.YAMLError:
        return keys, raw


def set_key(config: dict, keys: list[str], value: Any) -> None:
    node = config
    for i, k in enumerate(keys[:-1]):
        if k not in node:
            node[k] = {}    # the schema then names the unknown key
        elif not isinstance(node[k], dict):
            raise ConfigError(f"configuration key {'.'.join(keys[: i + 1])!r} holds a value, not a section")
        node = node[k]
    node[keys[-1]] = value


def validate(config: dict, origins: dict | None = None) -> dict:
    """The configuration checked against pipeline/config_schema.py, as a plain dict with each value in
    its declared type (an integer given for a float knob becomes a float). A bad value raises one line
    naming the key, the value, the reason and where the value came from."""
    try:
        return Config.model_validate(config).model_dump()
    except ValidationError as e:
        errors = e.errors()
    _raise(config, errors, origins or {})


def validate_section(name: str, section: dict, source: str) -> dict:
    """One section again, after a stage's command-line options replaced some of its keys."""
    try:
        return Config.model_fields[name].annotation.model_validate(section).model_dump()
    except ValidationError as e:
        errors = [{**err, "loc": (name, *err["loc"])} for err in e.errors()]
    _raise({name: section}, errors, {f"{name}.{key}": source for key in section})


def _raise(config: dict, errors: list[dict], origins: dict):
    first, *rest = _problems(config, errors, origins)
    more = f" (and {len(rest)} more: {', '.join(k for k, _ in rest)})" if rest else ""
    raise ConfigError(f"{first[1]}{more}")


def _problems(config: dict, errors: list[dict], origins: dict) -> list[tuple[str, str]]:
    """[(key, message)], one per bad key, in the schema's order; a union's alternatives are joined."""
    by_key: dict[str, list[dict]] = {}
    for err in errors:
        key = _key_of(config, err)
        by_key.setdefault(key, []).append(err)
    out = []
    for key, errs in by_key.items():
        source = _source(key, origins)
        kind = errs[0]["type"]
        if kind == "extra_forbidden":
            text = f"unknown configuration key {key!r}{source}"
        elif kind == "missing":
            text = (f"configuration key {key!r}: missing{source}; pipeline/config_schema.py lists it, so the "
                    f"defaults must give it")
        elif kind == "value_error" and isinstance(errs[0]["input"], dict):   # a check across keys
            text = f"configuration section {key!r}: {_reason(errs[0])}"
        else:
            reasons = " or ".join(dict.fromkeys(_reason(err) for err in errs))
            text = f"configuration key {key!r}: {reasons}, got {errs[0]['input']!r}{source}"
        out.append((key, text))
    return out


def _key_of(config: dict, err: dict) -> str:
    """The dotted key an error is about: pydantic's location, cut where it leaves the configuration (a
    union adds the name of the alternative it tried)."""
    parts, node = [], config
    for part in err["loc"]:
        if not isinstance(node, dict) or not isinstance(part, str):
            break
        parts.append(part)
        node = node.get(part)
    return ".".join(parts) or "(top level)"


def _reason(err: dict) -> str:
    msg = err["msg"]
    if msg.startswith("Value error, "):       # our own cross-key checks
        return msg[len("Value error, "):]
    return msg.replace("Input should be", "should be").replace("String should", "should")


def _source(key: str, origins: dict) -> str:
    """Where the key came from: the layer that set it, the section holding it, or (an unknown section)
    the first key under it."""
    for candidate in [key, *(k for k in origins if k.startswith(key + "."))]:
        while candidate:
            if candidate in origins:
                return f" ({origins[candidate]})"
            candidate = candidate.rpartition(".")[0]
    return ""


def resolve(experiment: Path | None = None, overrides: Iterable[str] = (), defaults: Path | None = None) -> dict:
    """Defaults, then the experiment file's deltas, then each --set; checked as a whole before returning."""
    defaults = Path(defaults) if defaults is not None else defaults_file()
    origins: dict[str, str] = {}
    config = merge({}, load_defaults(defaults), origins, f"in {defaults}")
    if experiment is not None:
        config = merge(config, load_defaults(Path(experiment)), origins, f"in {experiment}")
    for text in overrides:
        keys, value = parse_override(text)
        set_key(config, keys, value)
        origins[".".join(keys)] = f"from --set {text}"
    return validate(config, origins)


def save_resolved(config: dict, out_dir: Path, name: str = "config.json") -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    write_json_atomic(path, config)  # a crash never leaves a half-written config.json beside the outputs
    return path
