"""End to end through the real CLI: synthesise a tiny grounded dataset, extract it with tiny encoders,
train, evaluate (pointing game included). Every step is the command a user types."""
import json

import pytest
from typer.testing import CliRunner

from pipeline.encoders.tiny import TINY_IMAGE_MODEL, TINY_IMAGE_SIZE
from pipeline.evaluation.figures import figure_pixels
from stages.cli import app
from stage2_fixtures import TINY_TRAIN

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.slow
def test_synth_extract_train_evaluate(tmp_path):
    from pipeline.encoders.tiny import make_tiny_text_model

    text_model = make_tiny_text_model(tmp_path / "tiny-bert")
    extract = [f"extract.text_model={text_model}", f"extract.image_model={TINY_IMAGE_MODEL}",
               f"extract.image_size={TINY_IMAGE_SIZE}", "extract.max_length=32", "extract.num_workers=0",
               "extract.device=cpu"]
    sets = lambda keys: [x for k in keys for x in ("--set", k)]
    data, cache, run = tmp_path / "synth", tmp_path / "cache", tmp_path / "run"

    invoke("data", "synth", data, "--images", 40)
    for split in ("train", "val", "test"):
        invoke("extract", "--captions", data / "captions.jsonl", "--images", data, "--cache", cache,
               "--split", split, "--no-progress", *sets(extract))
    invoke("train", "--cache", cache, "--out", run, "--grounding", data / "grounding.json", *sets(extract + TINY_TRAIN))
    invoke("evaluate", "grounding", "--cache", cache, "--run", run, "--grounding", data / "grounding.json",
           "--figures", 2, "--captions", data / "captions.jsonl", "--images", data)

    metrics = json.loads((run / "metrics.json").read_text())
    test_images = sum(1 for line in (data / "captions.jsonl").read_text().splitlines()
                      if json.loads(line)["split"] == "test") // 3
    assert metrics["images"] == test_images == metrics["retrieval"]["t2i"]["candidates"]
    for score in ("plan", "plan_common", "similarity"):
        token = metrics["pointing"][score]["token"]
        assert token["trials"] > 0 and 0 < token["chance"] < 1
        # Every token trial is a colour, shape or size word of the synthetic captions.
        assert token["trials"] == sum(metrics["pointing"][score][k]["trials"] for k in ("colour", "shape", "size"))
    assert metrics["pointing"]["plan"]["settings"] == {"mass": 0.25, "epsilon": 0.05, "patch_capacity": 64.0}
    assert metrics["pointing"]["plan_common"]["settings"] == {"mass": 0.5, "epsilon": 0.05, "patch_capacity": 16.0}
    # The scenes preset's format 2: the headline and the baselines that need every shape are there.
    assert metrics["grounding_format"] == 2
    assert metrics["headline"]["object_prior_all"] is not None and metrics["baselines"]["any_word"]["all"]["trials"] > 0
    assert set(metrics["synonyms"]) == {"h", "g", "random_fg"} and metrics["synonyms"]["g"]["trials"] > 0
    # The figures: two PNGs of the size their word count gives.
    from PIL import Image
    pngs = sorted((run / "figures").glob("*.png"))
    assert len(pngs) == 2
    for png in pngs:
        width, height = Image.open(png).size
        assert (width, height) in {figure_pixels(n) for n in range(1, 12)}
    # The validation pointing game was logged per epoch beside the losses.
    assert (run / "dvclive" / "plots" / "metrics" / "val" / "pointing" / "plan" / "token.tsv").exists()
    assert json.loads((run / "config.json").read_text())["extract"]["text_model"] == text_model
