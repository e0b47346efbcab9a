"""The cache fingerprint: everything that determines a split's bytes, recorded in its plan and manifest.

Extraction builds it from the extract.* configuration (`from_config`); training and evaluation read the
same table back (`config_mismatches`) to refuse a cache made with other knobs. Its "encoder" entries
(weight hashes, tokenizer hash, preprocessing) need the models loaded; the rest (`cheap_part`) does not,
which is what lets a rerun with nothing to do finish without loading a model.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.cache.format import FORMAT_VERSION, PLAN
from pipeline.errors import CacheError
from pipeline.io.jsonio import at, read_json

# fingerprint field -> the extract.* key it records.
CONFIG_FIELDS = {"storage_dtype": "storage_dtype", "compute_dtype": "compute_dtype",
                 "text.model": "text_model", "text.layer": "text_layer", "text.max_length": "max_length",
                 "image.model": "image_model", "image.image_size": "image_size",
                 "image.cast_weights": "image_cast_weights", "image.compile": "image_compile"}
# The speed options change the features' last bits, so they are in the fingerprint, but only when they
# apply (recorded as true): caches made before they existed keep matching, and absent means "off or older".
RECORDED_WHEN = {"image.cast_weights": lambda cfg: bool(cfg["image_cast_weights"]) and cfg["compute_dtype"] != "float32",
                 "image.compile": lambda cfg: bool(cfg["image_compile"])}
ABSENT = "<absent>"


def make_fingerprint(*, modalities: list[str], split: dict, shard_size: int, storage_dtype: str,
                     compute_dtype: str, text: dict | None = None, image: dict | None = None) -> dict:
    """`text`/`image` hold the configured model name and knobs and, once loaded, the encoder's own
    fingerprint under "encoder"."""
    fp = {"format_version": FORMAT_VERSION, "modalities": sorted(modalities), "split": split,
          "shard_size": int(shard_size), "storage_dtype": storage_dtype, "compute_dtype": compute_dtype}
    if text is not None:
        fp["text"] = text
    if image is not None:
        fp["image"] = image
    return fp


def configured_fields(cfg: dict, modalities) -> dict:
    """The fields the extract.* configuration decides, nested as in the fingerprint."""
    out: dict = {}
    for field, key in CONFIG_FIELDS.items():
        section, _, name = field.rpartition(".")
        if section and section not in modalities:
            continue
        if field in RECORDED_WHEN:
            if not RECORDED_WHEN[field](cfg):
                continue
            value = True
        else:
            value = cfg[key]
        (out.setdefault(section, {}) if section else out)[name] = value
    return out


def from_config(cfg: dict, modalities, split: dict) -> dict:
    """The fingerprint of an extraction with the extract.* configuration `cfg`, before the encoders load."""
    fields = configured_fields(cfg, modalities)
    return make_fingerprint(modalities=modalities, split=split, shard_size=cfg["shard_size"],
                            storage_dtype=fields["storage_dtype"], compute_dtype=fields["compute_dtype"],
                            text=fields.get("text"), image=fields.get("image"))


def config_mismatches(fingerprint: dict, cfg: dict) -> list[str]:
    """The recorded fields that the extract.* configuration `cfg` would set otherwise, each with both values.
    A modality the cache does not hold is not compared. An option recorded only when on (RECORDED_WHEN) is
    compared as extraction compares it: absent in the cache but on in `cfg` is a mismatch too."""
    diffs = []
    for field, key in CONFIG_FIELDS.items():
        section = field.rpartition(".")[0]
        if section and not isinstance(fingerprint.get(section), dict):
            continue
        found = at(fingerprint, field, ABSENT)
        if field in RECORDED_WHEN:
            expected = True if RECORDED_WHEN[field](cfg) else ABSENT
        elif found == ABSENT:   # an older cache, from before the field was recorded
            continue
        else:
            expected = cfg.get(key)
        if found != expected:
            diffs.append(f"{field} (cache: {found!r}, configuration extract.{key}: {cfg.get(key)!r})")
    return diffs


def cheap_part(fingerprint: dict) -> dict:
    """The fingerprint without the entries that need a loaded model."""
    return {k: ({kk: vv for kk, vv in v.items() if kk != "encoder"} if isinstance(v, dict) else v)
            for k, v in fingerprint.items()}


def fingerprint_diff(expected: dict, found: dict, prefix: str = "") -> list[str]:
    """Names of the fields whose values differ (nested keys joined by dots)."""
    diffs = []
    for key in sorted(set(expected) | set(found)):
        a, b = expected.get(key, ABSENT), found.get(key, ABSENT)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += fingerprint_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}")
    return diffs


def check_fingerprint(split_dir: Path, expected: dict, which: str = PLAN) -> None:
    """Fail, naming the differing fields, when the cache was made with another configuration."""
    path = Path(split_dir) / which
    found = read_json(path)["fingerprint"]
    diffs = fingerprint_diff(expected, found)
    if diffs:
        shown = ", ".join(f"{d} (cache: {field_value(found, d)!r}, now: {field_value(expected, d)!r})" for d in diffs[:8])
        raise CacheError(f"file {path}: the cache was built with another configuration; fields that differ: {shown}")


def field_value(d: dict, dotted: str):
    """The value at a dotted key, shortened for an error message ('<absent>' where missing)."""
    value = at(d, dotted, ABSENT)
    return value if not isinstance(value, str) or len(value) < 80 else value[:16] + "..."
