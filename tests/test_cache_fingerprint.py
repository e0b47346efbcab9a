"""The fingerprint <-> configuration table is one: what extraction records is what training checks."""
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.cache.fingerprint import cheap_part, config_mismatches, from_config
from pipeline.cache.staleness import check_against_config
from pipeline.config import resolve
from pipeline.errors import CacheError

SPLIT = {"items": 3, "items_sha256": "0" * 64}


@pytest.fixture
def cfg():
    return resolve(None, [])["extract"]


def test_extraction_records_the_configured_fields(cfg):
    fp = from_config({**cfg, "image_compile": False, "image_cast_weights": True, "compute_dtype": "float32"},
                     ["image", "text"], SPLIT)
    assert fp["text"] == {"model": cfg["text_model"], "layer": cfg["text_layer"], "max_length": cfg["max_length"]}
    # Speed options are recorded only when they change the features: caches made before them keep matching.
    assert fp["image"] == {"model": cfg["image_model"], "image_size": cfg["image_size"]}
    on = from_config({**cfg, "image_compile": True, "image_cast_weights": True, "compute_dtype": "bfloat16"},
                     ["image"], SPLIT)
    assert on["image"]["compile"] is True and on["image"]["cast_weights"] is True and "text" not in on
    assert fp["modalities"] == ["image", "text"] and fp["split"] == SPLIT and fp["shard_size"] == cfg["shard_size"]


def test_what_extraction_writes_training_accepts_and_a_changed_key_is_named(cfg):
    fp = from_config(cfg, ["text", "image"], SPLIT)
    fp["text"]["encoder"] = {"weights_sha256": "abc"}  # added once the model loads; not a configuration key
    assert config_mismatches(fp, cfg) == [] and "encoder" not in cheap_part(fp)["text"]
    changed = {**cfg, "max_length": cfg["max_length"] + 1}
    assert config_mismatches(fp, changed) == [
        f"text.max_length (cache: {cfg['max_length']!r}, configuration extract.max_length: {cfg['max_length'] + 1!r})"]
    reader = SimpleNamespace(fingerprint=fp, split_dir=Path("cache/x/train"))
    check_against_config(reader, cfg)
    with pytest.raises(CacheError, match=r"cache/x/train/manifest.json: the cache is stale.*text\.max_length"):
        check_against_config(reader, changed)


def test_fields_a_cache_does_not_record_are_not_compared(cfg):
    text_only = from_config(cfg, ["text"], SPLIT)
    assert config_mismatches(text_only, {**cfg, "image_model": "another", "image_compile": True}) == []
    compiled = from_config({**cfg, "image_compile": True}, ["image"], SPLIT)
    assert config_mismatches(compiled, {**cfg, "image_compile": False}) == [
        "image.compile (cache: True, configuration extract.image_compile: False)"]


def test_an_option_turned_on_since_extraction_is_a_mismatch_as_extraction_says(cfg):
    # Recorded only when on, so a cache made with it off lacks the field: training must still see the change.
    plain = from_config({**cfg, "image_compile": False}, ["image"], SPLIT)
    assert config_mismatches(plain, {**cfg, "image_compile": True}) == [
        "image.compile (cache: '<absent>', configuration extract.image_compile: True)"]
    bf16 = {**cfg, "compute_dtype": "bfloat16", "image_cast_weights": False}
    assert config_mismatches(from_config(bf16, ["image"], SPLIT), {**bf16, "image_cast_weights": True}) == [
        "image.cast_weights (cache: '<absent>', configuration extract.image_cast_weights: True)"]
