"""Build everything a training run needs from the configuration, then loop over epochs.

Called by `stages/train.py` (the CLI and DVC entry point); tests call it directly.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from dvclive import Live

from pipeline.cache.staleness import check_against_config, check_same_cache, identity
from pipeline.config import save_resolved
from pipeline.errors import TrainingError
from pipeline.io.atomic import atomic_path
from pipeline.modules import StageTwoModules
from pipeline.runtime import pick_device, seed_everything
from pipeline.training import checkpoint as ckpt
from pipeline.training.engine import evaluate_loss, train_one_epoch
from pipeline.training.reader import SplitReader, epoch_loader


TIMINGS = ("items_per_s", "data_wait_fraction")
# Above this share of an epoch's OT plans stopping at their iteration budget before train.ot_tol, the run says so
# (once): the loss then follows plans that are not the optimum the method describes.
UNCONVERGED_WARN_SHARE = 0.01


def open_splits(cache_root: Path, config: dict, splits=("train", "val")) -> dict[str, SplitReader]:
    """Readers for the splits, each checked against the configuration and against the first one."""
    cfg = config["train"]
    readers = {s: SplitReader(Path(cache_root) / s, cfg["memory_budget_gb"]) for s in splits}
    first = readers[splits[0]]
    for name, reader in readers.items():
        check_against_config(reader, config["extract"])
        check_same_cache(reader, identity(first.fingerprint), f"the {splits[0]} split")
    return readers


STEP_PLOTS = "train/step"   # engine.train_one_epoch's per-step metrics


def rewind_live(live_dir: Path, step: int) -> None:
    """Drop the dvclive plot rows a killed run wrote after its last checkpoint (at optimizer step `step`),
    which the resumed run is about to log again. dvclive's `resume=True` only appends, so without this a
    run killed mid-epoch has those steps twice. The epoch's own rows (val/*, train/epoch/*, epoch) are
    logged at the step its last batch ended on, before the checkpoint: kept while <= step; per-step rows
    are logged at the step they start from, so the checkpoint covers those < step."""
    metrics = Path(live_dir) / "plots" / "metrics"
    for tsv in sorted(metrics.rglob("*.tsv")) if metrics.is_dir() else []:
        per_step = tsv.relative_to(metrics).as_posix().startswith(STEP_PLOTS + "/")
        lines = tsv.read_text(encoding="utf-8").splitlines(keepends=True)
        if not lines:
            continue
        header = lines[0].rstrip("\r\n").split("\t")
        if "step" not in header:
            continue
        column = header.index("step")
        keep = [lines[0]]
        for line in lines[1:]:
            if not line.endswith("\n"):       # the kill landed mid-row
                continue
            fields = line.rstrip("\r\n").split("\t")
            try:
                row_step = int(fields[column])
            except (IndexError, ValueError):
                continue
            if row_step < step or (row_step == step and not per_step):
                keep.append(line)
        if len(keep) != len(lines):
            with atomic_path(tsv) as tmp:
                Path(tmp).write_text("".join(keep), encoding="utf-8")


def make_optimizer(model: torch.nn.Module, cfg: dict) -> torch.optim.AdamW:
    # Decay the weight matrices only: decaying biases and LayerNorm gains pulls them toward 0 for nothing.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg["weight_decay"]},
                              {"params": rest, "weight_decay": 0.0}], lr=cfg["lr"])


def pointing_due(epoch: int, cfg: dict, stopped_early: bool) -> bool:
    """Whether epoch `epoch` (counted from 1) runs the validation pointing pass: every
    train.val_pointing_every epochs and always the run's last, so a curve ends where the run did. It is only
    logged (early stopping reads the loss), so skipping it changes nothing else."""
    every = cfg["val_pointing_every"]
    return epoch % every == 0 or epoch >= cfg["epochs"] or stopped_early


def fit(config: dict, cache_root: Path, out_dir: Path, resume: bool = True, log=print, epoch_metrics=None) -> dict:
    """Train on cache_root/train with early stopping on cache_root/val; return a summary dict.
    epoch_metrics(model, val_reader, device) -> {name: value}, if given, runs after each epoch's validation
    and its values are logged as val/<name> (the pointing game, when the data has ground truth)."""
    threads = torch.get_num_threads()
    if config["train"]["num_threads"] > 0:
        torch.set_num_threads(config["train"]["num_threads"])
    try:
        return _fit(config, cache_root, out_dir, resume, log, epoch_metrics)
    finally:
        torch.set_num_threads(threads)   # a process-wide setting: give it back to the caller


def _fit(config: dict, cache_root: Path, out_dir: Path, resume: bool, log, epoch_metrics) -> dict:
    cfg = config["train"]
    out_dir = Path(out_dir)
    seed_everything(cfg["seed"])
    device = pick_device(cfg["device"])
    readers = open_splits(cache_root, config)
    train_reader, val_reader = readers["train"], readers["val"]
    train_reader.keep_images(cfg["train_images"])   # before any plan: steps_per_epoch counts the subset
    cache_id = identity(train_reader.fingerprint)
    d_t, d_v = train_reader.dims()

    model = StageTwoModules(d_t, d_v, cfg["d_g"], cfg["hidden"], cfg["layernorm"]).to(device)
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(cfg["seed"])   # negatives; saved so a resume draws the same
    steps_per_epoch = len(train_reader.plan(cfg["batch_size"], None))
    state = {"step": 0, "epoch": 0, "total_steps": steps_per_epoch * cfg["epochs"],
             "last_checkpoint": ckpt.checkpoint_dir(out_dir) / ckpt.LAST}
    best_val, bad_epochs = math.inf, 0

    resumed = resume and state["last_checkpoint"].exists()
    if resumed:
        saved = ckpt.load(state["last_checkpoint"], map_location=device)
        ckpt.check_compatible(saved, config, cache_id, state["last_checkpoint"])
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"].cpu())   # a CPU generator, wherever the weights live
        state.update(step=saved["step"], epoch=saved["epoch"])
        best_val, bad_epochs = saved["best_val"], saved["bad_epochs"]
        log(f"resuming {out_dir} from epoch {state['epoch']} (step {state['step']})")
    else:   # a fresh run: an older run's best.pt must not outlive it and be evaluated in its place
        for name in (ckpt.LAST, ckpt.BEST):
            (ckpt.checkpoint_dir(out_dir) / name).unlink(missing_ok=True)
    save_resolved(config, out_dir)
    log(f"train: {train_reader.used_captions} captions / {train_reader.used_images} images "
        f"({'in memory' if train_reader.in_memory else 'streaming'}, {train_reader.nbytes / 2**20:.1f} MiB); "
        f"val: {val_reader.num_captions} captions; device {device}")

    if resumed:
        rewind_live(out_dir / "dvclive", state["step"])
    live = Live(str(out_dir / "dvclive"), resume=resumed, save_dvc_exp=False, dvcyaml=None)
    live.step = state["step"]
    stopped_early = bad_epochs >= cfg["patience"]
    warned_ot = False
    try:
        while state["epoch"] < cfg["epochs"] and not stopped_early:
            loader = epoch_loader(train_reader, cfg["batch_size"], seed=[cfg["seed"], state["epoch"]],
                                  num_workers=cfg["num_workers"])
            train_stats = train_one_epoch(model, loader, optimizer, cfg, device, state, generator, live,
                                          total_captions=train_reader.used_captions,
                                          class_token=train_reader.class_token, caption_ids=train_reader.caption_ids)
            val_stats = evaluate_loss(model, epoch_loader(val_reader, cfg["batch_size"], seed=None), cfg, device,
                                      seed=cfg["seed"], class_token=val_reader.class_token)
            if not math.isfinite(val_stats["loss"]):
                raise TrainingError(f"epoch {state['epoch'] + 1}: the validation loss is not finite ({val_stats}); "
                                    f"training stopped. The last good checkpoint is kept at {state['last_checkpoint']}.")
            state["epoch"] += 1
            improved = val_stats["loss"] < best_val
            best_val, bad_epochs = (val_stats["loss"], 0) if improved else (best_val, bad_epochs + 1)
            stopped_early = bad_epochs >= cfg["patience"]
            if epoch_metrics is not None and pointing_due(state["epoch"], cfg, stopped_early):
                val_stats.update(epoch_metrics(model, val_reader, device))
            for k, v in train_stats.items():
                # Wall-clock rates go to the log line below, not to dvclive: they differ on every run, and in
                # dvclive they would change dvc.lock's hash of runs/default/dvclive after a reproduction that
                # gives the same results (a fresh clone's `dvc repro` must leave the tree clean).
                if k not in TIMINGS:
                    live.log_metric(f"train/epoch/{k}", v)
            for k, v in val_stats.items():
                live.log_metric(f"val/{k}", v)
            live.log_metric("epoch", state["epoch"])
            live.make_summary()   # not next_step(): the step axis stays the optimizer step
            kwargs = dict(model=model, optimizer=optimizer, generator=generator, step=state["step"],
                          epoch=state["epoch"], config=config, cache=cache_id, best_val=best_val,
                          bad_epochs=bad_epochs)
            if improved:
                ckpt.save(ckpt.checkpoint_dir(out_dir) / ckpt.BEST, **kwargs)
            ckpt.save(state["last_checkpoint"], **kwargs)
            parts = ", ".join(f"{k} {train_stats[k]:.4f}" for k in ("match", "ot", "ot_hinge", "local") if k in train_stats)
            log(f"epoch {state['epoch']}/{cfg['epochs']}: train loss {train_stats['loss']:.4f} ({parts}), "
                f"val loss {val_stats['loss']:.4f}, collapse {val_stats['collapse']:.3f}, "
                f"{train_stats['items_per_s']:.0f} captions/s, data wait {100 * train_stats['data_wait_fraction']:.1f}%"
                + (" *" if improved else ""))
            if not warned_ot and train_stats.get("ot_unconverged", 0.0) > UNCONVERGED_WARN_SHARE:
                log(_unconverged_warning(state["epoch"], train_stats, cfg))
                warned_ot = True
    finally:
        live.end()
    if not (ckpt.checkpoint_dir(out_dir) / ckpt.BEST).exists():
        raise TrainingError(f"file {out_dir}: no epoch finished, so there is no checkpoint")
    return {"epochs": state["epoch"], "steps": state["step"], "best_val_loss": best_val,
            "stopped_early": stopped_early, "resumed": resumed}


def _unconverged_warning(epoch: int, stats: dict, cfg: dict) -> str:
    return (f"warning: epoch {epoch}: {100 * stats['ot_unconverged']:.1f}% of the OT plans stopped at "
            f"their iteration budget (train.ot_max_iter={cfg['ot_max_iter']}, more at small epsilon) before their "
            f"marginal error reached "
            f"train.ot_tol={cfg['ot_tol']:g} (largest {stats['ot_max_marginal_error']:.3g}); the OT loss follows "
            f"those unfinished plans. Raise train.ot_max_iter, or loosen train.epsilon (now {cfg['epsilon']:g}; a "
            f"larger epsilon converges in fewer iterations). Shown once per run; dvclive logs "
            f"train/epoch/ot_unconverged every epoch.")
