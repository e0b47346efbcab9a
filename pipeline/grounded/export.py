"""A trained run -> a self-contained folder that GroundedEncoder.from_pretrained loads offline.

    OUT/config.json          GroundedConfig: the text encoder's config, layer, pooling, max_length, dimensions,
                             the run's resolved configuration, the cache fingerprint, the source checkpoint
    OUT/model.safetensors    text_model.* (the text encoder, no pooler) and f_g.* (what save_pretrained writes)
    OUT/tokenizer.json, tokenizer_config.json   the text encoder's tokenizer, as transformers saves it
    OUT/README.md            the model card, with the run's metrics
    OUT/run_metrics.json     the run's metrics.json, when it has one

config.json's fg_sha256 and text_fingerprint hash what was exported, so a loader refuses a folder changed since.
The export runs on any device (`device`, "auto" = CUDA when there is one); a run extracted in float16 needs a
GPU, since the CPU has no float16 autocast. The weights are copied, not computed, so the device only decides
where the self-check runs.

The folder is written beside OUT under a temporary name, loaded back and checked to give exactly the run's
vectors, and only then renamed into place: a crash never leaves a half-written OUT.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import torch

from pipeline.encoders.weights_hash import state_dict_sha256
from pipeline.errors import ConfigError, ExportError
from pipeline.grounded.encoder import GroundedEncoder, load_run_encoder
from pipeline.grounded.hf_model import build, f_g_fields
from pipeline.grounded.model_card import model_card
from pipeline.runtime import pick_device
from pipeline.training.checkpoint import BEST, checkpoint_dir, load

# Inputs of the export's self-check: two captions, alone and as a pair, and one long enough to be cut.
CHECK_TEXTS = ["a small red circle left of a blue square", "the crimson triangle is above the green diamond",
               "shapes " * 200]


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """A temporary folder beside `final`, swapped into place only on success (an older `final` is replaced)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}.", dir=final.parent))
    os.chmod(tmp, 0o755)
    old = final.parent / f".old-{final.name}.{tmp.name.rsplit('.', 1)[-1]}"
    try:
        yield tmp
        for path in tmp.iterdir():  # save_pretrained may write private files; others read a shared export
            path.chmod(0o644)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
    finally:
        if old.exists() and not final.exists():   # interrupted between the two renames: keep the old export
            os.replace(old, final)
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover)


def same_vectors(a: GroundedEncoder, b: GroundedEncoder, texts: list[str]) -> str | None:
    """None when both encoders give identical outputs for `texts`; otherwise what differs."""
    for pairs in (None, texts[1:] + texts[:1]):
        x, y = a.encode(texts, pairs), b.encode(texts, pairs)
        for name in ("input_ids", "token_type_ids", "attention_mask", "offsets", "t", "pooled"):
            u, v = getattr(x, name), getattr(y, name)
            if u.shape != v.shape:
                return f"{name} differs in shape ({list(u.shape)} vs {list(v.shape)})"
            if not torch.equal(u, v):
                return f"{name} differs (max abs difference {(u.float() - v.float()).abs().max().item():.3g})"
    return None


def check_same_encoder(text, cache: dict, path: Path) -> None:
    """The text encoder loaded now must be the one the run's cache was extracted with: the name alone (e.g.
    offline:minilm) does not pin the weights, and f_g means nothing on another encoder's states."""
    trained = (cache.get("text") or {}).get("encoder") or {}
    now = text.fingerprint()
    diffs = [f"{k} (cache: {trained[k]!r}, now: {now[k]!r})" for k in ("weights_sha256", "tokenizer_sha256", "layer")
             if k in trained and trained[k] != now[k]]
    if diffs:
        raise ExportError(f"file {path}: the run was trained on states of another text encoder than "
                          f"{text.name!r} loads now; fields that differ: {', '.join(diffs)}")


def check_device(run_dir: Path, checkpoint: str, device: torch.device) -> None:
    """A float16 run on the CPU fails here, with the fix: runtime.autocast's own message suggests another
    dtype, but the export must compute in the run's dtype to reproduce its vectors, so only the device can change."""
    if device.type != "cpu":
        return
    path = checkpoint_dir(run_dir) / checkpoint
    dtype = load(path)["config"]["extract"]["compute_dtype"]
    if dtype == "float16":
        raise ConfigError(f"file {path}: the run's text encoder computes in float16 (extract.compute_dtype), "
                          "which the CPU cannot run; export on a GPU: --device cuda")


def export_run(run_dir: Path, out: Path, *, pooling: str, max_length: int, checkpoint: str = BEST,
               device="auto") -> Path:
    """Write the export of `run_dir` (its `checkpoint`) to `out`, computing on `device`; return `out`."""
    run_dir, out = Path(run_dir), Path(out)
    device = pick_device(str(device))
    check_device(run_dir, checkpoint, device)
    text, f_g, ckpt = load_run_encoder(run_dir, max_length=max_length, device=device, which=checkpoint)
    check_same_encoder(text, ckpt["cache"], run_dir / "checkpoints" / checkpoint)
    fields = dict(**f_g_fields(ckpt["dims"]), layer=text.layer, pooling=pooling, max_length=max_length,
                  compute_dtype=text.compute_dtype, text_model_name=text.name, text_fingerprint=text.fingerprint(),
                  fg_sha256=state_dict_sha256(f_g), run_config=ckpt["config"], cache_fingerprint=ckpt["cache"],
                  source={"run": str(run_dir), "checkpoint": checkpoint, "epoch": ckpt["epoch"], "step": ckpt["step"]})
    model = build(text.model, f_g, **fields)
    source = GroundedEncoder(text, model)  # before any write: a bad pooling fails here
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        text.tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(fields, metrics))
        if metrics is not None:
            shutil.copyfile(metrics_file, tmp / "run_metrics.json")
        problem = same_vectors(source, GroundedEncoder.from_pretrained(tmp, device=device), CHECK_TEXTS)
        if problem:
            raise ExportError(f"folder {out}: the export does not reproduce run {run_dir}: {problem}")
    return out
