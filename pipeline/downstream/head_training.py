"""The head-training loop both downstream modes share: shuffled mini-batches, AdamW, linear warmup then decay
(stage two's own loop is pipeline/training/fit.py).

The caller supplies `step(indices) -> loss` for a batch of item indices; the loop owns the order,
the optimiser and the schedule, so probe and fine-tune differ only in what a step computes.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

# The max gradient norm: a fresh head's first steps on a large loss must not wreck a tuned encoder or f_g.
GRAD_CLIP = 1.0


def shuffled_batches(n_items: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n_items)
    return [order[start:start + batch_size] for start in range(0, n_items, batch_size)]


def train_head(param_groups: list[dict], n_items: int, step, *, epochs: int, batch_size: int, seed: int,
               weight_decay: float, warmup_fraction: float, modules: tuple[torch.nn.Module, ...] = (),
               epoch_plan=None) -> list[float]:
    """Train for `epochs` passes; returns the mean loss of each epoch. `modules` are put in train mode.
    `epoch_plan(rng)`: an epoch's batches of item indices (default: one shuffle of all items); a streamed
    probe passes one that keeps each batch inside a cache shard."""
    epoch_plan = epoch_plan or (lambda rng: shuffled_batches(n_items, batch_size, rng))
    groups = [g for g in param_groups if any(p.requires_grad for p in g["params"])]
    for g in groups:
        g["params"] = [p for p in g["params"] if p.requires_grad]
    opt = torch.optim.AdamW(groups, weight_decay=weight_decay)
    steps = epochs * len(epoch_plan(np.random.default_rng(0)))   # the count of batches is the same every epoch
    warmup = max(1, int(warmup_fraction * steps))
    # Warmup keeps the first updates small while a fresh head still sends large gradients back.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    rng = np.random.default_rng(seed)
    history = []
    for m in modules:
        m.train()
    for _ in range(epochs):
        total = 0.0
        for idx in epoch_plan(rng):
            loss = step(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], GRAD_CLIP)
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / n_items)
    for m in modules:
        m.eval()
    return history


def batches(n: int, size: int):
    for start in range(0, n, size):
        yield np.arange(start, min(n, start + size))


@contextlib.contextmanager
def threads(n: int):
    """Run on `n` CPU threads (0: leave torch's setting), restoring the setting afterwards.

    The probe always uses one: its products are small enough that a second OpenMP thread on a busy core
    costs more in waiting than it computes (bench/RESULTS.md)."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
