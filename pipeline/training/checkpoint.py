"""Checkpoints: what a killed run needs to continue exactly, and what evaluation needs to rebuild the model.

A run directory:

    RUN_DIR/config.json            the resolved configuration (params.yaml -> --config -> --set)
    RUN_DIR/checkpoints/last.pt    written at the end of every epoch; `--resume` continues from it
    RUN_DIR/checkpoints/best.pt    the epoch with the lowest validation loss; what `load_run` returns
    RUN_DIR/dvclive/               per-step and per-epoch metrics (metrics.json, plots/metrics/...)
    RUN_DIR/metrics.json           written by `groundedbert evaluate grounding`

Every checkpoint holds only tensors and plain Python values, so it loads with
`torch.load(weights_only=True)` (no pickled code runs), and is written to a temporary file renamed into
place, so a kill during the save leaves the previous checkpoint intact. It is serialised in memory first, so
a disk too full for it is a DiskFullError before anything is written, the previous checkpoint kept.
"""
from __future__ import annotations

import io
from pathlib import Path

import torch

from pipeline.cache.fingerprint import fingerprint_diff
from pipeline.errors import TrainingError
from pipeline.io.atomic import write_bytes_atomic
from pipeline.modules import StageTwoModules

LAST, BEST = "last.pt", "best.pt"
# Keys that may change when a run is resumed: they decide how long or where it runs, not what it learns.
RESUMABLE = {"epochs", "patience", "num_workers", "num_threads", "device", "memory_budget_gb", "amp"}


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save(path: Path, *, model: StageTwoModules, optimizer, generator: torch.Generator, step: int, epoch: int,
         config: dict, cache: dict, best_val: float, bad_epochs: int) -> None:
    payload = {"model": model.state_dict(), "dims": dict(model.dims), "optimizer": optimizer.state_dict(),
               "generator": generator.get_state(), "step": int(step), "epoch": int(epoch), "config": config,
               "cache": cache, "best_val": float(best_val), "bad_epochs": int(bad_epochs)}
    buffer = io.BytesIO()   # serialised first: its size is known, and a full disk refuses it before a byte is written
    torch.save(payload, buffer)
    write_bytes_atomic(Path(path), buffer.getbuffer())


def load(path: Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise TrainingError(f"file {path}: checkpoint not found (train a run first: `groundedbert train`)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:   # truncated zip, foreign pickle: the reason is in the message
        raise TrainingError(f"file {path}: cannot load checkpoint ({type(e).__name__}: {e})") from e


def check_compatible(checkpoint: dict, config: dict, cache: dict, path: Path) -> None:
    """A checkpoint resumes only a run of the same configuration on the same cache; otherwise name the
    fields that differ, so the user knows to pick another --out or drop --resume."""
    old = {k: v for k, v in checkpoint["config"]["train"].items() if k not in RESUMABLE}
    new = {k: v for k, v in config["train"].items() if k not in RESUMABLE}
    diffs = [f"train.{d} (checkpoint: {old.get(d, '<absent>')!r}, now: {new.get(d, '<absent>')!r})"
             for d in fingerprint_diff(new, old)]
    diffs += [f"cache.{d}" for d in fingerprint_diff(cache, checkpoint["cache"])]
    if diffs:
        raise TrainingError(f"file {path}: the checkpoint was made with another configuration; fields that "
                            f"differ: {', '.join(diffs[:8])}. Use another --out folder, or --no-resume to start over.")


def build_model(checkpoint: dict) -> StageTwoModules:
    model = StageTwoModules(**checkpoint["dims"])
    model.load_state_dict(checkpoint["model"])
    return model


def load_run(run_dir: Path, which: str = BEST, map_location="cpu") -> tuple[StageTwoModules, dict]:
    """The trained model (in eval mode) and the resolved configuration of a run directory.

    `which` is best.pt (lowest validation loss, the default) or last.pt. Downstream code takes
    `model.f_g`; the configuration's `train` section holds d_g and the OT knobs."""
    checkpoint = load(checkpoint_dir(run_dir) / which, map_location)
    model = build_model(checkpoint).eval()
    return model, checkpoint["config"]
