"""Bad input through the real CLI: each a one-line error naming what is wrong, exit code 2, no traceback."""
import json
import shutil

import pytest
from typer.testing import CliRunner

from stages.cli import app
from stage2_fixtures import TINY_TRAIN, default_fingerprint, make_cache, make_split

runner = CliRunner()


def sets(*extra):
    args = []
    for s in TINY_TRAIN + ["train.epochs=1"] + list(extra):
        args += ["--set", s]
    return args


def train(cache, out, *extra, resume=True):
    return runner.invoke(app, ["train", "--cache", str(cache), "--out", str(out),
                               *sets(*extra), "--resume" if resume else "--no-resume"])


def assert_user_error(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def trained(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = train(cache, out)
    assert result.exit_code == 0, result.output
    return out


def test_missing_cache(tmp_path):
    assert_user_error(train(tmp_path / "nowhere", tmp_path / "run"), "nowhere/train", "not found")


def test_stale_cache_names_the_fields(tmp_path):
    make_cache(tmp_path / "c", fingerprint=default_fingerprint("x", storage_dtype="float32", **{"text.layer": 3}))
    assert_user_error(train(tmp_path / "c", tmp_path / "run"), "stale", "storage_dtype", "text.layer",
                      "extract.text_layer")


def test_cache_from_a_compiled_encoder_is_stale_for_the_eager_default(tmp_path):
    make_cache(tmp_path / "c", fingerprint=default_fingerprint("x", **{"image.compile": True}))
    assert_user_error(train(tmp_path / "c", tmp_path / "run"), "stale", "image.compile", "extract.image_compile")


def test_splits_extracted_with_different_encoders(tmp_path):
    make_cache(tmp_path / "c")
    shutil.rmtree(tmp_path / "c" / "val")
    make_split(tmp_path / "c" / "val", n_images=4,
               fingerprint=default_fingerprint("val", **{"image.encoder": {"weights_sha256": "other"}}))
    assert_user_error(train(tmp_path / "c", tmp_path / "run"), "val", "image.encoder.weights_sha256")


def test_corrupt_shard(tmp_path):
    make_cache(tmp_path / "c")
    shard = tmp_path / "c" / "train" / "text" / "00000.h5"
    shard.write_bytes(b"\0" * 64)
    assert_user_error(train(tmp_path / "c", tmp_path / "run"), "train/text/00000.h5")


def test_split_without_captions(tmp_path):
    make_cache(tmp_path / "c", sizes=(("train", 0), ("val", 3)))
    assert_user_error(train(tmp_path / "c", tmp_path / "run"), "no captions")


def test_checkpoint_from_another_configuration(cache, trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    assert_user_error(train(cache, out, "train.d_g=4", "train.mass=0.3"), "another configuration",
                      "train.d_g (checkpoint: 8, now: 4)", "train.mass")
    # Changing how long it runs is not another configuration; starting over is always possible.
    assert train(cache, out, "train.epochs=2").exit_code == 0
    assert train(cache, out, "train.d_g=4", resume=False).exit_code == 0


def test_evaluate_on_a_split_from_another_cache(cache, trained, tmp_path):
    make_split(tmp_path / "other" / "test", n_images=4,
               fingerprint=default_fingerprint("test", **{"text.encoder": {"weights_sha256": "other"}}))
    result = runner.invoke(app, ["evaluate", "grounding", "--cache", str(tmp_path / "other"), "--run", str(trained)])
    assert_user_error(result, "text.encoder.weights_sha256", "trained on")


def test_evaluate_without_a_trained_run(cache, tmp_path):
    result = runner.invoke(app, ["evaluate", "grounding", "--cache", str(cache), "--run", str(tmp_path)])
    assert_user_error(result, "best.pt", "not found")


def test_evaluate_writes_metrics_with_chance_levels(cache, trained, tmp_path):
    # Grounding truth for two test captions: the words at characters 0-7 name the top-left quarter.
    grounding = {"cap000_0": [{"start": 0, "end": 7, "text": "x", "box": [0, 0, 32, 32]}],
                 "cap001_1": [{"start": 4, "end": 11, "text": "y", "box": [0, 32, 32, 64]}]}
    (tmp_path / "grounding.json").write_text(json.dumps(grounding))
    result = runner.invoke(app, ["evaluate", "grounding", "--cache", str(cache), "--run", str(trained),
                                 "--grounding", str(tmp_path / "grounding.json")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["captions"] == 12 and metrics["images"] == 6
    assert metrics["retrieval"]["t2i"]["candidates"] == 6
    assert metrics["retrieval"]["t2i"]["chance@1"] == pytest.approx(1 / 6)
    assert metrics["retrieval"]["i2t"]["candidates"] == 12
    assert metrics["matching"]["pairs"] == 24   # the values themselves: tests/test_golden.py
    # Two tokens per phrase overlap its span (no word annotations: every token of the phrase is a trial).
    # The tiny ViT sees a 4x4 grid, patch centres at 1/8, 3/8, 5/8, 7/8 of the crop. img000 is 64x64: the box
    # is its top-left quarter, holding 4 of the 16 centres. img001 is 80x64, cropped to x in [8, 72]: its box
    # keeps x in [0, 0.375) of the crop (the centre at 3/8 lies on the far edge, so outside) and y in
    # [0.5, 1): 1 column x 2 rows = 2 of 16 centres, not the box's 0.1875 of the area.
    token = metrics["pointing"]["plan"]["token"]
    assert token["trials"] == 4
    assert token["chance"] == pytest.approx((4 / 16 + 2 / 16) / 2)
    assert metrics["pointing"]["plan"]["phrase"]["trials"] == 2
    assert (trained / "evaluate_config.json").exists()


def test_evaluation_solves_plans_with_its_own_settings(cache, trained, tmp_path):
    # The same trained run, scored with the evaluation's OT settings rather than the run's: the pointing game
    # must report (and use) them, and the common setting stays what evaluate.common says.
    grounding = {"cap000_0": [{"start": 0, "end": 7, "text": "x", "box": [0, 0, 32, 32]}]}
    (tmp_path / "grounding.json").write_text(json.dumps(grounding))
    args = ["evaluate", "grounding", "--cache", str(cache), "--run", str(trained), "--grounding",
            str(tmp_path / "grounding.json")]
    run_cfg = json.loads((trained / "config.json").read_text())["train"]
    fixed = json.loads(runner.invoke(app, args).stdout)["pointing"]
    assert fixed["plan"]["settings"] == {"mass": 0.25, "epsilon": 0.05, "patch_capacity": 64.0}   # params.yaml's
    # null: the run's own train.* values.
    own = json.loads(runner.invoke(app, args + [f"--set=evaluate.{k}=null" for k in ("mass", "epsilon",
                                                                                      "patch_capacity")]).stdout)["pointing"]
    assert own["plan"]["settings"] == {k: run_cfg[k] for k in ("mass", "epsilon", "patch_capacity")}
    result = runner.invoke(app, args + ["--set", "evaluate.mass=1.0", "--set", "evaluate.patch_capacity=1.0"])
    assert result.exit_code == 0, result.output
    changed = json.loads(result.stdout)["pointing"]
    assert changed["plan"]["settings"] == {"mass": 1.0, "epsilon": 0.05, "patch_capacity": 1.0}
    assert changed["plan_common"]["settings"] == own["plan_common"]["settings"] == {
        "mass": 0.5, "epsilon": 0.05, "patch_capacity": 16.0}
    # The plan_common numbers do not depend on the evaluation's own settings.
    assert changed["plan_common"] == own["plan_common"]
    assert_user_error(runner.invoke(app, args + ["--set", "evaluate.mass=1.5"]), "evaluate.mass",
                      "less than or equal to 1")


def test_text_only_cache(tmp_path):
    # What `groundedbert extract --modality text` leaves: a manifest that plans no image shards at all.
    from pipeline.io.atomic import write_json_atomic
    from pipeline.io.jsonio import read_json

    make_cache(tmp_path / "c")
    for name in ("plan.json", "manifest.json"):
        path = tmp_path / "c" / "train" / name
        manifest = read_json(path)
        del manifest["shards"]["image"]
        manifest["fingerprint"]["modalities"] = ["text"]
        write_json_atomic(path, manifest)
    shutil.rmtree(tmp_path / "c" / "train" / "image")
    result = train(tmp_path / "c", tmp_path / "run")
    assert_user_error(result, "c/train", "no image features")
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "no image features" in error[0] and "KeyError" not in result.output, result.output
