"""Task heads over the token features of grounded/vectors.py: `[h; f_g(h)]` (grounded) or `h` alone (baseline).

GLUE heads read one pooled vector per input ([CLS] or the mean over its tokens); SQuAD's span head
scores every token as an answer start and end. Inputs arrive flat, as in the cache: the tokens of a
batch back to back, with `segments[r]` naming the input that row r belongs to, so no padding is
stored or computed for the pooled tasks.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def random_like(module: nn.Module, seed: int) -> nn.Module:
    """A copy of `module` with every layer re-initialised (seeded): the control for the grounded head.
    [h; f(h)] with an untrained f of the same shape gives the head the same width and nonlinearity;
    only what f_g learned from images is missing, so grounded minus control isolates that."""
    copy_ = copy.deepcopy(module)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in copy_.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return copy_


def _mlp(dim_in: int, dim_out: int, hidden: int, dropout: float) -> nn.Sequential:
    """hidden = 0: a linear probe; otherwise one GELU hidden layer."""
    if hidden <= 0:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(dim_in, dim_out))
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(dim_in, hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden, dim_out))


class PooledHead(nn.Module):
    """Classification (n_out classes) or regression (n_out = 1) over a pooled vector."""

    def __init__(self, dim_in: int, n_out: int, hidden: int = 0, dropout: float = 0.1):
        super().__init__()
        self.net = _mlp(dim_in, n_out, hidden, dropout)
        self.regression = n_out == 1

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        out = self.net(pooled)
        return out[:, 0] if self.regression else out

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.regression:
            return nn.functional.mse_loss(out, target.float())
        return nn.functional.cross_entropy(out, target.long())

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.regression else out.argmax(-1)


class SpanHead(nn.Module):
    """Start and end logits for every token of a (B, L, D) batch; padding gets -inf."""

    def __init__(self, dim_in: int, hidden: int = 0, dropout: float = 0.1):
        super().__init__()
        self.net = _mlp(dim_in, 2, hidden, dropout)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(states).float().masked_fill(~mask.bool()[..., None], float("-inf"))
        return logits[..., 0], logits[..., 1]

    @staticmethod
    def loss(start: torch.Tensor, end: torch.Tensor, start_gold: torch.Tensor, end_gold: torch.Tensor) -> torch.Tensor:
        ce = nn.functional.cross_entropy
        return (ce(start, start_gold.long()) + ce(end, end_gold.long())) / 2
