"""Task heads and the token features they read: `[h; f_g(h)]` (grounded) or `h` alone (baseline).

GLUE heads read one pooled vector per input ([CLS] or the mean over its tokens); SQuAD's span head
scores every token as an answer start and end. Inputs arrive flat, as in the cache: the tokens of a
batch back to back, with `segments[r]` naming the input that row r belongs to, so no padding is
stored or computed for the pooled tasks.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

POOLINGS = ("cls", "mean")


class TokenFeatures(nn.Module):
    """h -> [h; f_g(h)], or h when `grounding` is None. f_g is frozen unless `tune` is true."""

    def __init__(self, dim: int, grounding: nn.Module | None = None, tune: bool = False):
        super().__init__()
        self.grounding = grounding
        self.dim = dim
        self.tune = tune
        if grounding is not None:
            grounding.requires_grad_(tune)
            param = next(grounding.parameters())
            with torch.no_grad():  # d_g as the module says, not as a config might claim
                grounding.eval()
                self.dim += int(grounding(torch.zeros(1, dim, dtype=param.dtype, device=param.device)).shape[-1])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.grounding is None:
            return h
        if not self.tune:
            self.grounding.eval()  # a frozen f_g must not apply dropout either
            with torch.no_grad():
                return torch.cat([h, self.grounding(h)], dim=-1)
        return torch.cat([h, self.grounding(h)], dim=-1)


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


def pool(rows: torch.Tensor, segments: torch.Tensor, first: torch.Tensor, count: int, how: str) -> torch.Tensor:
    """(R, D) token rows -> (count, D): the [CLS] row of each input (`first` holds its row index),
    or the mean over each input's rows, specials included (as sentence-transformers pools)."""
    if how == "cls":
        return rows[first]
    if how == "mean":
        total = rows.new_zeros(count, rows.shape[1]).index_add_(0, segments, rows)
        n = torch.bincount(segments, minlength=count).clamp(min=1).to(rows.dtype)
        return total / n[:, None]
    raise ValueError(f"pooling must be one of {POOLINGS}, got {how!r}")


def masked_pool(states: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """(B, L, D) padded states and a (B, L) mask -> (B, D), the same pooling as `pool`."""
    if how == "cls":
        return states[:, 0]
    if how == "mean":
        m = mask.to(states.dtype)[..., None]
        return (states * m).sum(1) / m.sum(1).clamp(min=1)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {how!r}")


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
