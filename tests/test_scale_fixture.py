"""The scale fixture: a cache in the real format (it verifies, it trains) that says it is not a dataset."""
import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cache.info import cache_info
from pipeline.cache.verify import verify_cache
from pipeline.errors import ConfigError
from pipeline.extraction.scale_fixture import write_scale_fixture
from pipeline.training.reader import SplitReader, epoch_loader
from stages.cache_tools import app

SMALL = dict(images=13, captions_per_image=3, tokens=6, text_dim=8, image_dim=12, grid=(2, 3), prefix=1,
             shard_size=4)


@pytest.fixture(scope="module")
def fixture_split(tmp_path_factory):
    d = tmp_path_factory.mktemp("fixture") / "train"
    write_scale_fixture(d, **SMALL)
    return d


def test_fixture_is_a_sound_cache_of_the_asked_size(fixture_split):
    assert verify_cache(fixture_split) == []
    info = cache_info(fixture_split)
    assert info["complete"] and info["fixture"]["kind"] == "scale"
    assert info["modalities"]["image"]["items"] == 13 and info["modalities"]["text"]["items"] == 39
    assert info["modalities"]["image"]["shards"] == 4 and info["modalities"]["text"]["shards"] == 10
    assert info["modalities"]["image"]["dim"] == 12 and info["modalities"]["text"]["dim"] == 8


@pytest.mark.parametrize("budget", [1.0, 0.0])
def test_fixture_reads_as_training_batches(fixture_split, budget):
    reader = SplitReader(fixture_split, memory_budget_gb=budget)
    assert reader.grid == (2, 3) and reader.class_token
    batches = list(epoch_loader(reader, 5, seed=0))
    assert sorted(c for b in batches for c in b["caption_index"].tolist()) == list(range(39))
    b = batches[0]
    assert b["patches"].shape[1:] == (6, 12) and b["h"].dtype.is_floating_point
    assert np.isfinite(b["patches"].float().numpy()).all() and b["content_mask"].any()
    for i, c in enumerate(b["caption_index"].tolist()):   # each caption meets its own image
        assert reader.image_ids[int(b["image_index"][b["image_slot"][i]])] == reader.caption_image_ids[c]


def test_same_seed_same_bytes(tmp_path):
    a = write_scale_fixture(tmp_path / "a", **SMALL, seed=3)
    b = write_scale_fixture(tmp_path / "b", **SMALL, seed=3)
    c = write_scale_fixture(tmp_path / "c", **SMALL, seed=4)
    sha = lambda m: [e["sha256"] for e in m["shards"]["image"] + m["shards"]["text"]]
    assert sha(a) == sha(b) and sha(a) != sha(c)


def test_cli_writes_it_and_info_says_it_is_not_a_dataset(tmp_path):
    out = tmp_path / "big" / "train"
    r = CliRunner().invoke(app, ["fixture", str(out), "--images", "5", "--captions-per-image", "2", "--tokens", "5",
                                 "--text-dim", "4", "--image-dim", "4", "--grid", "2", "--shard-size", "2"])
    assert r.exit_code == 0, r.output
    assert "not a dataset" in r.output
    r = CliRunner().invoke(app, ["info", str(out)])
    assert r.exit_code == 0 and "NOT A DATASET" in r.output
    r = CliRunner().invoke(app, ["fixture", str(out), "--images", "5"])   # never over an existing cache
    assert r.exit_code == 2 and "already there" in r.output


def test_bad_sizes_are_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        write_scale_fixture(tmp_path / "x", images=0)


def test_retrieval_ranks_are_the_same_with_the_scores_kept_or_recomputed(fixture_split, monkeypatch):
    import torch

    from pipeline.evaluation import scoring
    from pipeline.modules import StageTwoModules

    reader = SplitReader(fixture_split, memory_budget_gb=0.0)
    torch.manual_seed(0)
    model = StageTwoModules(8, 12, 4, 16, True).eval()
    t0, vbar, gold = scoring.encode_split(model, reader, 5, torch.device("cpu"))
    kept = scoring.retrieval_ranks(model, t0, vbar, gold, 5)
    monkeypatch.setattr(scoring, "KEEP_SCORES_BYTES", 0)            # the second pass recomputes
    recomputed = scoring.retrieval_ranks(model, t0, vbar, gold, 5)
    assert all(np.array_equal(a, b) for a, b in zip(kept, recomputed))
