"""Learning rate: linear warm-up, then a half cosine down to zero at the last step (as in MAE).

A pure function of the step, so a resumed run needs only the step to be back on its schedule."""
from __future__ import annotations

import math

import torch


def learning_rate(step: int, total_steps: int, base_lr: float, warmup_steps: int) -> float:
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
