"""ViTs with register tokens but no class token: their prefix holds registers alone, so stage two must take
the patch mean as p_0, not prefix[:, 0]. The cache says so (shard attribute `class_token = 0`, encoder
fingerprint `class_token: false`) only for them; a cache whose prefix starts with a CLS token is unchanged."""
import json

import h5py
import pytest
import torch
from typer.testing import CliRunner

from extract_helpers import extract_args, make_dataset, run_cli
from pipeline.cache.format import load_images
from pipeline.cache.info import cache_info
from pipeline.cache.verify import verify_cache
from pipeline.encoders.tiny import TINY_IMAGE_MODEL, TINY_IMAGE_SIZE
from pipeline.modules import StageTwoModules
from pipeline.training.reader import SplitReader, epoch_loader
from stage2_fixtures import TINY_TRAIN
from stages.cache_tools import app as cache_app

# timm asserts token pooling needs a class token, hence global_pool=avg.
REGISTERS_ONLY = TINY_IMAGE_MODEL + "&class_token=false&reg_tokens=4&global_pool=avg"
CLS_AND_REGISTERS = TINY_IMAGE_MODEL + "&class_token=true&reg_tokens=2"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), n_images=6, per_image=2)


def extract(tmp_path_factory, tiny, data, image_model: str, name: str):
    cache = tmp_path_factory.mktemp(name)
    r = run_cli(extract_args(*data, cache, tiny, "--image-model", image_model))  # the last --image-model wins
    assert r.exit_code == 0, r.output
    return cache / "train"


@pytest.fixture(scope="module")
def registers_only(tmp_path_factory, tiny, data):
    return extract(tmp_path_factory, tiny, data, REGISTERS_ONLY, "registers")


@pytest.fixture(scope="module")
def cls_and_registers(tmp_path_factory, tiny, data):
    return extract(tmp_path_factory, tiny, data, CLS_AND_REGISTERS, "cls-registers")


@pytest.fixture(scope="module")
def default_model(tmp_path_factory, tiny, data):
    return extract(tmp_path_factory, tiny, data, TINY_IMAGE_MODEL, "default")


def image_shards(split):
    return sorted((split / "image").glob("*.h5"))


def first_batch_p0(split, budget: float):
    reader = SplitReader(split, memory_budget_gb=budget)
    batch = next(iter(epoch_loader(reader, 8, seed=None)))
    prefix, patches = batch["prefix"].float(), batch["patches"].float()
    return reader, prefix, patches, StageTwoModules.global_token(prefix, patches, class_token=reader.class_token)


def test_register_only_cache_records_it_and_verifies(registers_only):
    for path in image_shards(registers_only):
        with h5py.File(path, "r") as f:
            assert f.attrs["num_prefix_tokens"] == 4 and f.attrs["class_token"] == 0
    manifest = json.loads((registers_only / "manifest.json").read_text())
    assert manifest["fingerprint"]["image"]["encoder"]["class_token"] is False
    assert all(e["class_token"] is False for e in manifest["shards"]["image"])
    images = load_images(registers_only)
    assert images.prefix.shape[1] == 4 and not images.class_token   # the registers stay cached
    assert verify_cache(registers_only) == []
    r = CliRunner().invoke(cache_app, ["verify", str(registers_only)])
    assert r.exit_code == 0 and r.output.startswith("OK "), r.output
    assert cache_info(registers_only)["modalities"]["image"]["class_token"] is False
    r = CliRunner().invoke(cache_app, ["info", str(registers_only)])
    assert "(4 prefix tokens, no class token)" in r.output, r.output


@pytest.mark.parametrize("budget", [4.0, 0.0])   # in memory, and streamed from the shards
def test_register_only_p0_is_the_patch_mean(registers_only, budget):
    reader, prefix, patches, p0 = first_batch_p0(registers_only, budget)
    assert reader.class_token is False and prefix.shape[1] == 4
    torch.testing.assert_close(p0, patches.mean(dim=1))
    assert not torch.allclose(p0, prefix[:, 0])


@pytest.mark.parametrize("budget", [4.0, 0.0])
def test_cls_with_registers_p0_is_the_class_token(cls_and_registers, budget):
    reader, prefix, patches, p0 = first_batch_p0(cls_and_registers, budget)
    assert reader.class_token is True and prefix.shape[1] == 3
    assert torch.equal(p0, prefix[:, 0])
    assert verify_cache(cls_and_registers) == []


@pytest.mark.parametrize("which", ["cls_and_registers", "default_model"])
def test_class_token_models_write_no_new_attribute(request, which):
    """What keeps a CLS-first cache's bytes as before this attribute existed: nothing new is written."""
    split = request.getfixturevalue(which)
    for path in image_shards(split):
        with h5py.File(path, "r") as f:
            assert "class_token" not in f.attrs
    for name in ("plan.json", "manifest.json"):
        written = json.loads((split / name).read_text())
        assert "class_token" not in written["fingerprint"]["image"]["encoder"]
        assert all("class_token" not in e for e in written["shards"]["image"])


def test_verify_catches_a_shard_that_disagrees_with_the_manifest(registers_only, tmp_path):
    import shutil

    split = tmp_path / "train"
    shutil.copytree(registers_only, split)
    manifest = json.loads((split / "manifest.json").read_text())
    del manifest["fingerprint"]["image"]["encoder"]["class_token"]   # the manifest now claims CLS first
    (split / "manifest.json").write_text(json.dumps(manifest))
    problems = verify_cache(split)
    assert problems and all("class token" in p for p in problems), problems


def test_training_and_evaluation_use_the_patch_mean(tmp_path, tiny, data, registers_only, monkeypatch):
    """fit() and evaluate_run() on a register-only cache: every p_0 is asked for with class_token=False."""
    import shutil

    from pipeline.config import resolve
    from pipeline.evaluation.grounding_eval import evaluate_run
    from pipeline.training.fit import fit

    cache = tmp_path / "cache"
    shutil.copytree(registers_only, cache / "train")
    captions = tmp_path / "val.jsonl"   # the same images under another split name: a val split to stop on
    captions.write_text(data[0].read_text().replace('"split": "train"', '"split": "val"'))
    r = run_cli(extract_args(captions, data[1], cache, tiny, "--image-model", REGISTERS_ONLY, "--split", "val"))
    assert r.exit_code == 0, r.output

    seen = []
    real = StageTwoModules.global_token

    def spy(prefix, patches, *, class_token):
        seen.append(class_token)
        return real(prefix, patches, class_token=class_token)

    monkeypatch.setattr(StageTwoModules, "global_token", staticmethod(spy))
    config = resolve(None, TINY_TRAIN + ["train.epochs=1", "train.device=cpu"])
    config["extract"].update(text_model=tiny, image_model=REGISTERS_ONLY, image_size=TINY_IMAGE_SIZE, max_length=16)
    summary = fit(config, cache, tmp_path / "run", log=lambda *_: None)
    assert summary["epochs"] == 1
    metrics = evaluate_run(tmp_path / "run", cache / "val", config["evaluate"])
    assert metrics["images"] == 6
    assert seen and set(seen) == {False}
