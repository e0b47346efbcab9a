"""The configuration schema (pipeline/config_schema.py): every layer checked alike, before anything loads."""
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.config import REPO_ROOT, load_defaults, resolve
from pipeline.config_schema import Config, schema_keys
from pipeline.errors import ConfigError

EXPERIMENTS = sorted((REPO_ROOT / "experiments").glob("*.yaml"))


def dotted_keys(node: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in node.items():
        out.add(prefix + key)
        if isinstance(value, dict):
            out |= dotted_keys(value, f"{prefix}{key}.")
    return out


def test_params_yaml_and_the_schema_list_the_same_keys():
    """A knob added to one and not the other fails here (docs/development.md: adding a knob)."""
    params = dotted_keys(load_defaults(REPO_ROOT / "params.yaml"))
    assert sorted(params - schema_keys()) == [], "in params.yaml, not in pipeline/config_schema.py"
    assert sorted(schema_keys() - params) == [], "in pipeline/config_schema.py, not in params.yaml"
    Config.model_validate(load_defaults(REPO_ROOT / "params.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: p.name)
def test_every_experiment_file_validates(experiment):
    resolve(experiment)


def test_there_are_experiment_files():
    assert len(EXPERIMENTS) >= 5


def test_solver_choices_are_the_solvers_training_knows():
    from pipeline.transport import SOLVERS

    choices = Config.model_fields["train"].annotation.model_fields["ot_solver"].annotation.__args__
    assert set(choices) == set(SOLVERS)


@pytest.mark.parametrize("override, reason", [
    ("train.layernorm=abc", "should be a valid boolean, got 'abc'"),
    ("train.layernorm=1", "should be a valid boolean, got 1"),
    ("train.epochs=2.5", "should be a valid integer, got 2.5"),
    ("train.negatives=0", "should be greater than or equal to 1, got 0"),
    ("train.patience=0", "should be greater than or equal to 1, got 0"),
    ("train.mass=0", "should be greater than 0, got 0"),
    ("train.mass=1.5", "should be less than or equal to 1, got 1.5"),
    ("train.ot_solver=exact", "should be 'sinkhorn', 'sinkhorn-compiled', 'pot-exact' or 'pot-entropic', got 'exact'"),
    ("train.device=gpu", "should be auto, cpu, mps, cuda or cuda:N, got 'gpu'"),
    ("extract.num_workers=-1", "should be 'auto' or should be greater than or equal to 0, got -1"),
    ("evaluate.mass=2", "should be less than or equal to 1, got 2"),
    ("evaluate.common.epsilon=0", "should be greater than 0, got 0"),
    ("downstream.pooling=max", "should be 'cls' or 'mean', got 'max'"),
])
def test_a_bad_set_value_is_one_line_naming_the_key(override, reason):
    key = override.split("=")[0]
    with pytest.raises(ConfigError) as caught:
        resolve(None, [override])
    message = str(caught.value)
    assert "\n" not in message
    assert message == f"configuration key {key!r}: {reason} (from --set {override})"


def test_a_bad_value_in_an_experiment_file_names_the_key_and_the_file(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("train:\n  epochs: 2.5\n")
    with pytest.raises(ConfigError, match=re.escape(f"configuration key 'train.epochs': should be a valid "
                                                    f"integer, got 2.5 (in {exp})")):
        resolve(exp)


def test_a_bad_default_names_the_key_and_params_yaml(tmp_path):
    params = load_defaults(REPO_ROOT / "params.yaml")
    params["train"]["negative_mode"] = "hardest"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=re.escape(f"'train.negative_mode': should be 'random' or 'hard', "
                                                    f"got 'hardest' (in {path})")):
        resolve(defaults=path)


def test_a_key_missing_from_the_defaults_is_named(tmp_path):
    params = load_defaults(REPO_ROOT / "params.yaml")
    del params["train"]["ot_tol"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=re.escape(f"configuration key 'train.ot_tol': missing (in {path})")):
        resolve(defaults=path)


def test_a_section_replaced_by_a_value_is_named(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("train: 3\n")
    with pytest.raises(ConfigError, match=re.escape(f"configuration key 'train': should be a valid dictionary")):
        resolve(exp)


@pytest.mark.parametrize("override, message", [
    ("data.val_fraction=0.95", "configuration section 'data': val_fraction + test_fraction = 1.05 leaves no"),
    ("downstream.stride=384", "configuration section 'downstream': stride (384) must be smaller than squad_max_length"),
])
def test_checks_across_keys(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve(None, [override])


def test_several_bad_keys_are_one_line_naming_each():
    with pytest.raises(ConfigError) as caught:
        resolve(None, ["train.epochs=2.5", "train.mass=3", "data.images=x"])
    assert str(caught.value).endswith("(and 2 more: train.mass, train.epochs)")
    assert str(caught.value).startswith("configuration key 'data.images'")


def test_an_integer_for_a_float_knob_becomes_a_float():
    value = resolve(None, ["train.mass=1"])["train"]["mass"]
    assert value == 1.0 and isinstance(value, float)


def test_the_defaults_come_back_unchanged():
    """Checking changes no value, type or order: a run's config.json stays what it was."""
    assert list(resolve().items()) == list(load_defaults(REPO_ROOT / "params.yaml").items())


@pytest.mark.parametrize("args, key", [
    (["train", "--cache", "nowhere", "--out", "nowhere", "--set", "train.epochs=2.5"], "train.epochs"),
    (["evaluate", "grounding", "--run", "nowhere", "--cache", "nowhere", "--set", "evaluate.figures=-1"],
     "evaluate.figures"),
    (["extract", "--captions", "nowhere.jsonl", "--images", "nowhere", "--cache", "nowhere",
      "--compute-dtype", "float64"], "extract.compute_dtype"),
    (["evaluate", "glue", "--task", "sst2", "--data", "nowhere", "--run", "nowhere", "--out", "nowhere",
      "--pooling", "max"], "downstream.pooling"),
])
def test_the_cli_refuses_a_bad_value_before_reading_anything(args, key, tmp_path, monkeypatch):
    """Exit 2 and one line naming the key, although the cache and data paths do not exist: the
    configuration is checked before them."""
    from stages.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GROUNDEDBERT_PARAMS", str(REPO_ROOT / "params.yaml"))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: configuration key {key!r}"), result.output
