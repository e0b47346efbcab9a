"""The layered configuration: defaults -> experiment deltas -> --set overrides."""
import json
import re

import pytest

from pipeline.config import load_defaults, resolve, save_resolved
from pipeline.errors import ConfigError


def test_defaults_have_every_section():
    cfg = load_defaults()
    assert {"data", "extract", "train", "evaluate"} <= set(cfg)


def test_experiment_file_holds_only_deltas(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("train:\n  mass: 1.0\n  d_g: 64\n")
    cfg = resolve(exp)
    assert cfg["train"]["mass"] == 1.0 and cfg["train"]["d_g"] == 64
    assert cfg["train"]["epsilon"] == load_defaults()["train"]["epsilon"]  # untouched keys keep defaults


def test_overrides_win_over_experiment_and_keep_types(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("train:\n  mass: 1.0\n")
    cfg = resolve(exp, ["train.mass=0.3", "train.lambda_ot=0", "train.layernorm=false", "train.negative_mode=hard"])
    assert cfg["train"]["mass"] == 0.3
    assert cfg["train"]["lambda_ot"] == 0.0 and isinstance(cfg["train"]["lambda_ot"], float)
    assert cfg["train"]["layernorm"] is False
    assert cfg["train"]["negative_mode"] == "hard"


@pytest.mark.parametrize("override, message", [
    ("train.nope=1", "unknown configuration key 'train.nope' (from --set train.nope=1)"),
    ("nosection.key=1", "unknown configuration key 'nosection'"),
    ("train.mass=abc", "'train.mass': should be a valid number, got 'abc'"),
    ("train.mass.deep=1", "'train.mass' holds a value, not a section"),
    ("train.mass", "not of the form key=value"),
])
def test_bad_overrides_are_named(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve(None, [override])


def test_unknown_key_in_experiment_file(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("train:\n  masss: 1.0\n")
    with pytest.raises(ConfigError, match=re.escape(f"unknown configuration key 'train.masss' (in {exp})")):
        resolve(exp)


def test_free_text_keys_take_set_values_verbatim():
    """A folder named 2024 stays the string "2024" (YAML would read a number, which the schema refuses)."""
    assert resolve(None, ["data.root=2024"])["data"]["root"] == "2024"
    assert resolve(None, ["train.device=cuda:1"])["train"]["device"] == "cuda:1"


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        resolve(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        resolve(bad)


def test_resolved_config_is_saved(tmp_path):
    cfg = resolve(None, ["train.mass=0.25"])
    path = save_resolved(cfg, tmp_path / "run")
    assert json.loads(path.read_text())["train"]["mass"] == 0.25


def test_the_working_directorys_params_win(tmp_path, monkeypatch):
    """DVC runs each stage (and each `dvc exp run -S` experiment) in its workspace: that params.yaml
    must be the one read, not the installed package's."""
    import yaml
    cfg = load_defaults()
    cfg["train"]["mass"] = 0.125
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    assert resolve()["train"]["mass"] == 0.125
    other = tmp_path / "elsewhere.yaml"
    cfg["train"]["mass"] = 0.75
    other.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("GROUNDEDBERT_PARAMS", str(other))
    assert resolve()["train"]["mass"] == 0.75
