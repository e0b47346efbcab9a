"""One training epoch and one validation pass (the MAE split: the entry point builds, the engine runs).

A step: features to the device -> f_g, f_v, f_c -> matching BCE on each caption's own image and k
negatives from the batch -> partial-OT alignment on the matched pairs (and, with the hinge on, on each
caption with its first negative) -> the token-wise contrastive term over the batch's images ->
L = L_match + lambda * (L_ot + w_hinge * L_hinge) + w_local * L_local.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time

import torch
from tqdm import tqdm

from pipeline.errors import ConfigError, TrainingError
from pipeline.losses import matching_bce, mean_pairwise_cosine, ot_alignment_loss, ot_hinge, pick_negatives, unit
from pipeline.local_score import local_contrastive, pack_content
from pipeline.runtime import to_device, torch_threads
from pipeline.training.schedule import learning_rate, set_learning_rate
from pipeline.transport import ConvergenceTally, TransportInputError


def amp_context(device: torch.device, amp: str):
    """bfloat16 autocast on CUDA (no loss scaling needed, unlike float16); full precision on the CPU,
    where autocast would slow these small matrix products down. The OT leaves autocast by itself."""
    if amp not in ("auto", "bfloat16", "off"):
        raise ConfigError(f"train.amp must be auto, bfloat16 or off, got {amp!r}")
    if amp == "off" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16)


def forward_losses(model, batch: dict, cfg: dict, generator: torch.Generator, amp, with_ot: bool, *,
                   class_token: bool, ot_tally: ConvergenceTally | None = None) -> dict:
    """The losses of one batch (already on the device), as 0-dim tensors. `class_token`: the reader's
    (is prefix token 0 a class token?), required so that no caller guesses. ot_tally, if given, counts
    the batch's OT plans (matched and hinge pairs) that stopped before reaching train.ot_tol."""
    slot, content = batch["image_slot"], batch["content_mask"]
    with amp:
        p0 = model.global_token(batch["prefix"], batch["patches"], class_token=class_token)
        g, v, t0, vbar = model(batch["h"], batch["patches"], p0)
        pos = model.f_c(t0, vbar[slot])
        valid = slot[:, None] != torch.arange(vbar.shape[0], device=slot.device)[None, :]
        scores = None
        if cfg["negative_mode"] == "hard":
            with torch.no_grad():
                scores = model.f_c.pairwise(t0, vbar)
        idx, mask = pick_negatives(valid, cfg["negatives"], cfg["negative_mode"], scores, generator)
        neg = model.f_c(t0[:, None, :].expand(-1, idx.shape[1], -1), vbar[idx])
    out = {"match": matching_bce(pos, neg, mask),
           "accuracy": (((pos > 0).float().sum() + ((neg <= 0) & mask).float().sum())
                        / (pos.numel() + mask.sum())).detach(),
           "collapse": mean_pairwise_cosine(g[content])}
    out["loss"] = out["match"]
    rows = content.any(1).nonzero().squeeze(1)   # a caption with no content token has nothing to align
    # Both local terms compare directions only: normalise every token and patch once, in float32 outside
    # autocast, and hand the unit vectors on, instead of each term normalising its own gathered copies.
    with torch.autocast(device_type=g.device.type, enabled=False):
        gu, vu = unit(g), unit(v)
    if with_ot and len(rows):
        # With the hinge on, each caption is also aligned with its first negative image; both sets of
        # problems go to the solver as one batch. Content tokens are packed to the front and the padding
        # cut: [CLS], [SEP] and padding carry no mass, so only the work changes.
        neg = mask[rows, 0] if cfg["ot_hinge_weight"] > 0 else torch.zeros_like(rows, dtype=torch.bool)
        packed, packed_mask = pack_content(gu[rows], content[rows])
        with torch_threads(cfg.get("ot_num_threads", 0)):
            per_pair, _, errors = ot_alignment_loss(
                torch.cat([packed, packed[neg]]), torch.cat([vu[slot[rows]], vu[idx[rows[neg], 0]]]),
                torch.cat([packed_mask, packed_mask[neg]]),
                torch.ones(len(rows) + int(neg.sum()), v.shape[1], dtype=torch.bool, device=v.device),
                mass=cfg["mass"], epsilon=cfg["epsilon"], solver=cfg["ot_solver"], max_iter=cfg["ot_max_iter"],
                tol=cfg["ot_tol"], patch_capacity=cfg["patch_capacity"], return_errors=True, unit_vectors=True)
        if ot_tally is not None:
            ot_tally.add(errors)
        matched = per_pair[: len(rows)]
        out["ot"] = matched.mean()
        out["loss"] = out["loss"] + cfg["lambda_ot"] * out["ot"]
        if neg.any():
            out["ot_hinge"] = ot_hinge(matched[mask[rows, 0]], per_pair[len(rows):], cfg["ot_hinge_margin"])
            out["loss"] = out["loss"] + cfg["lambda_ot"] * cfg["ot_hinge_weight"] * out["ot_hinge"]
    if cfg["local_contrastive_weight"] > 0 and len(rows) and vbar.shape[0] > 1:
        out["local"] = local_contrastive(gu[rows], vu, content[rows], slot[rows], cfg, ot_tally=ot_tally,
                                         unit_vectors=True)
        out["loss"] = out["loss"] + cfg["local_contrastive_weight"] * out["local"]
    return out


def train_one_epoch(model, loader, optimizer, cfg: dict, device, state: dict, generator, live=None,
                    total_captions: int | None = None, *, class_token: bool,
                    caption_ids: list[str] | None = None) -> dict:
    """Run one epoch; `state` carries step and total_steps across epochs. Returns epoch means, the
    fraction of the epoch's wall time spent waiting for data and, with the OT on, the share of the epoch's
    plans that did not reach train.ot_tol (ot_unconverged) and the largest marginal error. caption_ids (the
    split's, indexed by a batch's caption_index) name the batch's captions should a loss not be finite."""
    model.train()
    amp = amp_context(device, cfg["amp"])
    with_ot = cfg["lambda_ot"] > 0
    sums, items, wait = {}, 0, 0.0
    tally = ConvergenceTally(cfg["ot_tol"])
    bar = tqdm(total=total_captions, unit="cap", desc=f"epoch {state['epoch']}", mininterval=1.0,
               file=sys.stderr, dynamic_ncols=True, disable=None)
    start = tick = time.perf_counter()
    for batch in loader:
        wait += time.perf_counter() - tick
        batch = to_device(batch, device)
        lr = learning_rate(state["step"], state["total_steps"], cfg["lr"], cfg["warmup_steps"])
        set_learning_rate(optimizer, lr)
        try:
            losses = forward_losses(model, batch, cfg, generator, amp, with_ot, class_token=class_token, ot_tally=tally)
        except TransportInputError as error:   # the model's outputs gave the OT a non-finite cost
            raise TrainingError(_nan_message(state, {}, batch, caption_ids,
                                             culprit=f"the ot loss term cannot be computed ({error})")) from error
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise TrainingError(_nan_message(state, losses, batch, caption_ids))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        if not torch.isfinite(grad_norm):
            raise TrainingError(_nan_message(state, losses, batch, caption_ids, what="gradient norm"))
        optimizer.step()
        state["step"] += 1

        b = batch["h"].shape[0]
        items += b
        values = {k: float(v.detach()) for k, v in losses.items()}
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v * b
        if live is not None:
            for k, v in values.items():
                live.log_metric(f"train/step/{k}", v)
            live.log_metric("train/step/lr", lr)
            live.next_step()
        bar.update(b)
        bar.set_postfix(loss=f"{values['loss']:.4f}", refresh=False)
        tick = time.perf_counter()
    bar.close()
    elapsed = time.perf_counter() - start
    means = {k: v / max(items, 1) for k, v in sums.items()}
    if tally.plans:   # counts, not batch means: a share of plans and a maximum
        means.update(ot_unconverged=tally.share(), ot_max_marginal_error=tally.worst)
    means.update(items_per_s=items / max(elapsed, 1e-9), data_wait_fraction=wait / max(elapsed, 1e-9))
    return means


@torch.no_grad()
def evaluate_loss(model, loader, cfg: dict, device, seed: int, *, class_token: bool) -> dict:
    """Mean losses over a split, OT included even when lambda = 0 (to compare alignment across runs).
    Negatives come from a generator seeded the same every time, so epochs compare like with like."""
    model.eval()
    amp = amp_context(device, cfg["amp"])
    generator = torch.Generator().manual_seed(seed)
    sums, items = {}, 0
    for batch in loader:
        batch = to_device(batch, device)
        losses = forward_losses(model, batch, cfg, generator, amp, with_ot=True, class_token=class_token)
        b = batch["h"].shape[0]
        items += b
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v) * b
    return {k: v / max(items, 1) for k, v in sums.items()}


def _nan_message(state: dict, losses: dict, batch: dict, caption_ids: list[str] | None, what: str = "loss",
                 culprit: str | None = None) -> str:
    """One line: where (epoch, step, the batch's captions), which loss term first, and what to do."""
    values = {k: float(v.detach()) for k, v in losses.items()}
    terms = [k for k, v in values.items() if k != "loss" and not math.isfinite(v)]
    if culprit is None:
        culprit = f"the {terms[0]} loss term is not finite" if terms else f"the {what} is not finite"
    index = batch["caption_index"].tolist()
    shown = [caption_ids[i] for i in index[:5]] if caption_ids is not None else [f"#{i}" for i in index[:5]]
    more = f" and {len(index) - len(shown)} more" if len(index) > len(shown) else ""
    parts = f" ({', '.join(f'{k}={v:.4g}' for k, v in values.items())})" if values else ""
    kept = (f"The last good checkpoint is kept at {state['last_checkpoint']}" if state["last_checkpoint"].exists()
            else "No epoch finished, so there is no checkpoint")
    return (f"epoch {state['epoch'] + 1}, step {state['step'] + 1}: {culprit}{parts} on the batch of captions "
            f"{', '.join(shown)}{more}; training stopped. {kept}. Lower train.lr or check the cache for "
            f"non-finite features (`groundedbert cache verify`).")
