"""The one training loop both modes share: shuffled mini-batches, AdamW, linear warmup then decay.

The caller supplies `step(indices) -> loss` for a batch of item indices; the loop owns the order,
the optimiser and the schedule, so probe and fine-tune differ only in what a step computes.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch


def shuffled_batches(n_items: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n_items)
    return [order[start:start + batch_size] for start in range(0, n_items, batch_size)]


def fit(param_groups: list[dict], n_items: int, step, *, epochs: int, batch_size: int, seed: int,
        weight_decay: float = 0.01, warmup_fraction: float = 0.1, grad_clip: float = 1.0,
        modules: tuple[torch.nn.Module, ...] = (), epoch_plan=None) -> list[float]:
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
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], grad_clip)
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

    The probe always uses one: on a shared CPU, a (64, 512) x (512, 2) product on two OpenMP threads
    waits on a busy core at every op (measured 6-10 ms per step against 0.3-0.7 ms on one thread)."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
