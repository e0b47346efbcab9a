"""Non-finite numbers in cached features or in the training loss: one clear error naming where they came
from (the shard file and item, or the epoch, step, captions and loss term), never a silent result."""
import re

import h5py
import numpy as np
import pytest

from pipeline.cache.verify import verify_cache
from pipeline.config import resolve
from pipeline.errors import CacheError, TrainingError
from pipeline.training.fit import fit
from pipeline.training.reader import SplitReader, epoch_loader
from stage2_fixtures import TINY_TRAIN, make_cache, make_split


def read_everything(split_dir, memory_budget_gb):
    reader = SplitReader(split_dir, memory_budget_gb)
    return list(epoch_loader(reader, batch_size=4, seed=0))


def set_value(shard, name, index, value):
    with h5py.File(shard, "r+") as f:
        data = f[name][()]
        data[index] = value
        f[name][...] = data


@pytest.mark.parametrize("budget", [1.0, 0.0], ids=["in-memory", "streamed"])
def test_nan_token_state_names_its_shard_and_caption(tmp_path, budget):
    # Caption 9 (cap004_1) is the third of text shard 1 (shards of 7 captions).
    make_split(tmp_path / "train", n_images=10, captions_per_image=2, shard_size=7, nan_caption=9)
    with pytest.raises(CacheError, match=r"text/00001\.h5: item cap004_1: the cached token states hold NaN"):
        read_everything(tmp_path / "train", budget)


@pytest.mark.parametrize("budget", [1.0, 0.0], ids=["in-memory", "streamed"])
@pytest.mark.parametrize("name,what", [("patches", "patches"), ("prefix", "prefix tokens")])
def test_infinite_image_feature_names_its_shard_and_image(tmp_path, budget, name, what):
    make_split(tmp_path / "train", n_images=10, captions_per_image=2, shard_size=7)
    set_value(tmp_path / "train" / "image" / "00001.h5", name, (1, 0, 3), np.inf)   # image 8 = img008
    with pytest.raises(CacheError, match=rf"image/00001\.h5: item img008: the cached {what} hold NaN or infinite"):
        read_everything(tmp_path / "train", budget)


def test_cache_verify_names_the_item(tmp_path):
    make_split(tmp_path / "train", n_images=10, captions_per_image=2, shard_size=7, nan_caption=9)
    set_value(tmp_path / "train" / "image" / "00000.h5", "patches", (4, 2, 0), -np.inf)
    problems = verify_cache(tmp_path / "train")
    assert any(re.search(r"text/00001\.h5: non-finite values in states \(first at row \d+\) in item cap004_1$", p)
               for p in problems), problems
    assert any("image/00000.h5: non-finite values in patches (first at row 4) in item img004" in p for p in problems)


def test_training_on_a_cache_with_nan_features_stops_before_the_first_step(tmp_path):
    cache = make_cache(tmp_path / "cache", nan_caption=5)   # cap002_1 in every split
    with pytest.raises(CacheError, match=r"train/text/00000\.h5: item cap002_1: the cached token states"):
        fit(resolve(None, TINY_TRAIN), cache, tmp_path / "run", resume=False, log=lambda m: None)
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


@pytest.mark.parametrize("lambda_ot,culprit", [("0.1", "the ot loss term cannot be computed (cost has NaN"),
                                               ("0.0", "the match loss term is not finite")])
def test_a_diverging_run_names_epoch_step_captions_and_loss_term(tmp_path, lambda_ot, culprit):
    """A learning rate of 1e30 sends the weights to inf after the first step: the second step's loss is
    not finite (with the OT on, its cost already is), reported with where it happened; the features
    themselves are fine."""
    cache = make_cache(tmp_path / "cache")
    config = resolve(None, TINY_TRAIN + ["train.lr=1.0e+30", "train.warmup_steps=0", "train.grad_clip=1.0e+30",
                                         f"train.lambda_ot={lambda_ot}"])
    with pytest.raises(TrainingError) as caught:
        fit(config, cache, tmp_path / "run", resume=False, log=lambda m: None)
    message = str(caught.value)
    assert message.startswith(f"epoch 1, step 2: {culprit}"), message
    assert "on the batch of captions cap0" in message and "and 3 more; training stopped" in message
    assert "No epoch finished, so there is no checkpoint" in message and "\n" not in message
