"""Reading an exported folder, checked first, so that a bad one is one line naming the file and the reason.

What is checked, in order: the folder and config.json exist; config.json is ours (model_type), of this
format version, complete and self-consistent (d_t = the text encoder's width, layer in range, pooling
known, layer and compute_dtype as text_fingerprint recorded them); model.safetensors exists, reads, and holds
exactly the tensors and shapes the config implies; the tokenizer files exist. After loading, the text
encoder's weights, f_g's weights and the tokenizer must hash to what the export recorded, so a file altered
or swapped after export is caught too. The hashes are required fields: a folder whose record of them was
deleted is refused, not loaded unchecked.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from pipeline.encoders.weights_hash import state_dict_sha256
from pipeline.errors import ExportError
from pipeline.grounded.hf_model import FORMAT_VERSION, MODEL_TYPE, GroundedConfig, GroundedModel
from pipeline.grounded.vectors import POOLINGS

CONFIG, WEIGHTS = "config.json", "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
REQUIRED = ("format_version", "text_config", "layer", "pooling", "max_length", "compute_dtype", "d_t", "d_g",
            "fg_hidden", "fg_layernorm", "text_fingerprint", "fg_sha256")
# What load_folder and from_pretrained compare the loaded folder against; an export always records all four.
FINGERPRINT = ("weights_sha256", "tokenizer_sha256", "layer", "compute_dtype")


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def read_config(folder: Path) -> GroundedConfig:
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"folder {folder}: not found (write one with `groundedbert export --run RUN --out {folder}`)")
    path = folder / CONFIG
    if not path.is_file():
        raise ExportError(f"file {path}: missing; not a folder written by `groundedbert export`")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"file {path}: not valid JSON ({_first_line(e)})") from None
    if not isinstance(raw, dict) or raw.get("model_type") != MODEL_TYPE:
        found = raw.get("model_type") if isinstance(raw, dict) else None
        raise ExportError(f"file {path}: model_type {found!r}, expected {MODEL_TYPE!r}; "
                          "not a folder written by `groundedbert export`")
    if raw.get("format_version") != FORMAT_VERSION:
        raise ExportError(f"file {path}: format_version {raw.get('format_version')!r}, this code reads "
                          f"{FORMAT_VERSION}; export the run again with this version (`groundedbert export`)")
    lacking = [k for k in REQUIRED if raw.get(k) is None]
    recorded = raw.get("text_fingerprint")
    if recorded is not None and not isinstance(recorded, dict):
        raise ExportError(f"file {path}: text_fingerprint is {type(recorded).__name__}, expected an object")
    if recorded:  # emptied rather than deleted, it would skip the same checks
        lacking += [f"text_fingerprint.{k}" for k in FINGERPRINT if recorded.get(k) is None]
    elif recorded is not None:
        lacking.append("text_fingerprint")
    if lacking:
        # An export from before a field was recorded lacks it too; writing the folder again is the fix.
        raise ExportError(f"file {path}: lacks {', '.join(lacking)}; export the run again (`groundedbert export`)")
    try:
        config = GroundedConfig.from_dict(raw)
    except Exception as e:  # a text_config transformers cannot build, a field of the wrong type
        raise ExportError(f"file {path}: not a valid configuration ({_first_line(e)})") from None
    width, layers = config.text_config.hidden_size, config.text_config.num_hidden_layers
    if config.d_t != width:
        raise ExportError(f"file {path}: d_t is {config.d_t} but text_config.hidden_size is {width}")
    if not -(layers + 1) <= config.layer <= layers:
        raise ExportError(f"file {path}: layer {config.layer} out of range for a text encoder of {layers} layers")
    if config.pooling not in POOLINGS:
        raise ExportError(f"file {path}: pooling {config.pooling!r} is not one of {POOLINGS}")
    # layer and compute_dtype decide which states f_g reads, yet no hash covers them: the fingerprint taken
    # from the run's encoder at export is what they must still agree with.
    for key in ("layer", "compute_dtype"):
        if getattr(config, key) != recorded[key]:
            raise ExportError(f"file {path}: {key} is {getattr(config, key)!r} but the export recorded "
                              f"{recorded[key]!r} (text_fingerprint.{key}); altered after export?")
    return config


def check_weights(folder: Path, config: GroundedConfig) -> None:
    """The tensors model.safetensors holds against those a model built from the config has, shapes included."""
    from safetensors import safe_open

    path = Path(folder) / WEIGHTS
    if not path.is_file():
        raise ExportError(f"file {path}: missing (the text encoder's and f_g's weights)")
    try:
        with safe_open(str(path), "pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # truncated, not safetensors at all
        raise ExportError(f"file {path}: cannot be read ({_first_line(e)})") from None
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        expected = {k: tuple(v.shape) for k, v in GroundedModel(config).state_dict().items()}
    missing = sorted(set(expected) - set(found))
    if missing:
        raise ExportError(f"file {path}: lacks {len(missing)} tensor(s) the configuration needs, e.g. {missing[0]}")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise ExportError(f"file {path}: holds {len(extra)} tensor(s) the configuration has no place for, "
                          f"e.g. {extra[0]}")
    for key, shape in expected.items():
        if found[key] != shape:
            raise ExportError(f"file {path}: tensor {key} is {list(found[key])} but {CONFIG} implies {list(shape)} "
                              f"(d_t={config.d_t}, fg_hidden={config.fg_hidden}, d_g={config.d_g})")


def load_folder(folder: Path):
    """(GroundedModel in eval mode, fast tokenizer, config) of a checked export folder; local files only."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    config = read_config(folder)
    check_weights(folder, config)
    for name in TOKENIZER_FILES:
        if not (folder / name).is_file():
            raise ExportError(f"file {folder / name}: missing (the tokenizer)")
    try:
        model = GroundedModel.from_pretrained(folder, config=config, local_files_only=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ExportError(f"folder {folder}: cannot be loaded ({_first_line(e)})") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"file {folder / 'tokenizer.json'}: no fast tokenizer (character offsets need one)")
    if state_dict_sha256(model.text_model) != config.text_fingerprint["weights_sha256"]:
        raise ExportError(f"file {folder / WEIGHTS}: the text encoder's weights differ from those the export "
                          f"recorded in {CONFIG} (text_fingerprint.weights_sha256); altered after export?")
    if state_dict_sha256(model.f_g) != config.fg_sha256:
        raise ExportError(f"file {folder / WEIGHTS}: f_g's weights differ from those the export recorded in "
                          f"{CONFIG} (fg_sha256); altered after export?")
    return model, tokenizer, config
