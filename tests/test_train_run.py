"""Training runs on a tiny fake cache: determinism, resume after a kill, NaN stop, early stopping, outputs."""
import json
import math

import pytest
import torch

from pipeline.config import resolve
from pipeline.errors import TrainingError
from pipeline.modules import StageTwoModules
from pipeline.training import checkpoint as ckpt
from pipeline.training import engine, load_run
from pipeline.training.fit import fit
from stage2_fixtures import TINY_TRAIN, make_cache


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("cache"))


def run(cache, out, *sets, resume=True):
    return fit(resolve(None, TINY_TRAIN + list(sets)), cache, out, resume=resume, log=lambda m: None)


def weights(out, which=ckpt.LAST):
    return torch.load(ckpt.checkpoint_dir(out) / which, weights_only=True)


@pytest.fixture(scope="module")
def reference(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    summary = run(cache, out)
    return out, summary


def test_two_cpu_runs_are_identical(cache, reference, tmp_path):
    ref, _ = reference
    run(cache, tmp_path)
    a, b = weights(ref), weights(tmp_path)
    assert a["step"] == b["step"] > 0
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    # The dvclive folder is a DVC output: byte-identical too (no wall-clock rates in it), so a reproduction
    # with the same results leaves dvc.lock unchanged.
    files = lambda root: {p.relative_to(root): p.read_bytes() for p in sorted((root / "dvclive").rglob("*")) if p.is_file()}
    assert files(ref) == files(tmp_path) and files(ref)


def test_resume_after_a_kill_continues_exactly(cache, reference, tmp_path, monkeypatch):
    ref, _ = reference
    real_save = ckpt.save

    def save_then_die(path, **kwargs):   # killed right after the first epoch's last.pt landed
        real_save(path, **kwargs)
        if path.name == ckpt.LAST:
            raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(cache, tmp_path)
    assert weights(tmp_path)["epoch"] == 1
    monkeypatch.setattr(ckpt, "save", real_save)
    summary = run(cache, tmp_path)
    assert summary["resumed"] and summary["epochs"] == 3
    a, b = weights(ref), weights(tmp_path)
    assert a["step"] == b["step"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"])
    # dvclive resumed too: the step axis runs on without starting over.
    steps = [int(line.split("\t")[0]) for line in
             (tmp_path / "dvclive/plots/metrics/train/step/loss.tsv").read_text().splitlines()[1:]]
    assert steps == sorted(steps) and steps[-1] == a["step"] - 1


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(cache, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_bce = engine.matching_bce

    def bce_nan_in_epoch_two(*args):
        loss = real_bce(*args)
        if not torch.is_grad_enabled():   # validation
            return loss
        calls["n"] += 1
        return loss * math.nan if calls["n"] > 5 else loss   # epoch one has 4 steps

    monkeypatch.setattr(engine, "matching_bce", bce_nan_in_epoch_two)
    with pytest.raises(TrainingError, match=r"not finite.*last good checkpoint.*last\.pt"):
        run(cache, tmp_path)
    good = weights(tmp_path)
    assert good["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in good["model"].values())
    assert (ckpt.checkpoint_dir(tmp_path) / ckpt.BEST).exists()


def test_early_stopping_on_validation_loss(cache, tmp_path):
    # lr 0: nothing changes, so the validation loss never improves after the first epoch.
    summary = run(cache, tmp_path, "train.lr=0.0", "train.patience=1", "train.epochs=5")
    assert summary["stopped_early"] and summary["epochs"] == 2


def test_run_directory_layout_and_load_run(cache, reference):
    ref, summary = reference
    config = json.loads((ref / "config.json").read_text())
    assert config["train"]["d_g"] == 8 and config["train"]["epochs"] == 3
    live = json.loads((ref / "dvclive" / "metrics.json").read_text())
    assert {"train", "val", "epoch", "step"} <= live.keys() and live["epoch"] == 3
    assert (ref / "dvclive/plots/metrics/val/loss.tsv").read_text().count("\n") == 1 + 3
    assert (ref / "dvclive/plots/metrics/train/step/loss.tsv").read_text().count("\n") == 1 + summary["steps"]
    model, cfg = load_run(ref)
    assert not model.training and cfg["train"]["d_g"] == 8
    assert model.f_g(torch.zeros(2, 16)).shape == (2, 8)
    best = weights(ref, ckpt.BEST)
    assert best["best_val"] == pytest.approx(summary["best_val_loss"])


def test_loss_decreases_on_learnable_data(cache, reference):
    ref, _ = reference
    losses = [float(line.split("\t")[-1]) for line in
              (ref / "dvclive/plots/metrics/train/epoch/loss.tsv").read_text().splitlines()[1:]]
    assert losses[-1] < losses[0]


def test_step_losses_follow_the_knobs(cache):
    from pipeline.training.reader import SplitReader, epoch_loader

    reader = SplitReader(cache / "train")
    batch = next(iter(epoch_loader(reader, 8, seed=None)))
    batch = engine.to_device(batch, torch.device("cpu"))
    model = StageTwoModules(16, 12, 8, 16)
    base = resolve(None, TINY_TRAIN)["train"]

    def losses(**changes):
        cfg = {**base, **changes}
        return engine.forward_losses(model, batch, cfg, torch.Generator().manual_seed(0), engine.amp_context(
            torch.device("cpu"), "auto"), with_ot=cfg["lambda_ot"] > 0, class_token=reader.class_token)

    full = losses(lambda_ot=0.5, ot_hinge_weight=2.0, local_contrastive_weight=0.3)
    want = full["match"] + 0.5 * (full["ot"] + 2.0 * full["ot_hinge"]) + 0.3 * full["local"]
    assert full["loss"].item() == pytest.approx(want.item(), rel=1e-6)
    assert "ot_hinge" not in losses(lambda_ot=0.5, ot_hinge_weight=0.0)
    assert set(losses(lambda_ot=0.0, local_contrastive_weight=0.0)) == {"loss", "match", "accuracy", "collapse"}
    # The patch capacity changes the plan, so the OT loss; at 1 it is the paper summary's uniform-marginal problem
    # (docs/method.md).
    uniform, roomy = losses(lambda_ot=0.5, patch_capacity=1.0), losses(lambda_ot=0.5, patch_capacity=16.0)
    assert roomy["ot"].item() < uniform["ot"].item()
    # Hard negatives: the highest-scoring wrong image is at least as hard as a random one.
    hard, rand = losses(negative_mode="hard", lambda_ot=0.0), losses(negative_mode="random", lambda_ot=0.0)
    assert hard["match"].item() >= rand["match"].item() - 1e-6


def test_resume_after_a_kill_mid_epoch_logs_each_step_once(cache, reference, tmp_path, monkeypatch):
    # Killed inside epoch two, after steps 4 and 5 were logged but with last.pt still at step 4: the resumed
    # run logs steps 4 and 5 again, and the plots must hold each step once, exactly as an unbroken run's.
    ref, _ = reference
    calls = {"n": 0}
    real_bce = engine.matching_bce

    def die_in_epoch_two(*args):
        if torch.is_grad_enabled():   # a training step, not validation
            calls["n"] += 1
            if calls["n"] == 7:       # epoch one has 4 steps; steps 4 and 5 of epoch two went through
                raise KeyboardInterrupt
        return real_bce(*args)

    monkeypatch.setattr(engine, "matching_bce", die_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        run(cache, tmp_path)
    assert weights(tmp_path)["step"] == 4
    monkeypatch.setattr(engine, "matching_bce", real_bce)
    assert run(cache, tmp_path)["resumed"]
    plots = tmp_path / "dvclive/plots/metrics"
    for tsv in plots.rglob("*.tsv"):
        steps = [int(line.split("\t")[0]) for line in tsv.read_text().splitlines()[1:]]
        assert steps == sorted(set(steps)), tsv          # strictly increasing: no step twice
        # Same rows as the run that was never killed (it resumes exactly, so the values agree too).
        assert tsv.read_bytes() == (ref / "dvclive/plots/metrics" / tsv.relative_to(plots)).read_bytes(), tsv


def test_validation_pointing_every_k_epochs_and_at_the_last(cache, tmp_path):
    calls = []

    def hook(model, reader, device):
        calls.append(len(calls))
        return {"pointing/probe": 1.0}

    cfg = resolve(None, TINY_TRAIN + ["train.epochs=5", "train.patience=99", "train.val_pointing_every=2"])
    fit(cfg, cache, tmp_path, resume=False, log=lambda m: None, epoch_metrics=hook)
    assert len(calls) == 3                            # epochs 2, 4 and the last, 5
    rows = (tmp_path / "dvclive" / "plots" / "metrics" / "val" / "pointing" / "probe.tsv").read_text().splitlines()
    assert len(rows) == 1 + 3


def test_threads_of_the_ot_part_change_no_result(cache, reference, tmp_path):
    """train.ot_num_threads only sets how many threads the OT solve runs on, and gives them back after."""
    before = torch.get_num_threads()
    run(cache, tmp_path, "train.num_threads=1", "train.ot_num_threads=2")
    assert torch.get_num_threads() == before
    ref, _ = reference
    a, b = weights(ref), weights(tmp_path)
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-6), k
