"""Input checks for the batched solver and the POT reference, and the checked problem they read.

Both solvers check their inputs here, so they raise the same errors for the same bad input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pipeline.errors import ConfigError


class TransportInputError(ConfigError, ValueError):
    """A transport problem that cannot be solved as given; a ValueError too, as POT raises."""


@dataclass
class Problem:
    """A checked batch in the working dtype: everything the iterations read."""
    cost_inf: torch.Tensor | None  # (B, n, m), +inf on padded entries, a fresh tensor the first K is built in;
                                   # None when the batch has no padding (K is then built from cost_filled)
    cost_filled: torch.Tensor  # (B, n, m), 0 on padded entries; read only (it may be the caller's tensor)
    padded: torch.Tensor | None  # (B, n, m) bool, True where a row or a column is padding; None: no padding
    cost_min: torch.Tensor     # (B,) smallest unpadded cost
    a: torch.Tensor            # (B, n), 0 on padded rows
    b: torch.Tensor            # (B, m), 0 on padded columns
    mass: torch.Tensor         # (B,) mass to transport: s * min(|a|, |b|)
    row_mask: torch.Tensor
    col_mask: torch.Tensor


def check_problem(cost, row_mask, col_mask, mass, epsilon, a, b, max_iter, tol, check_every) -> Problem:
    """Validate the inputs (two host syncs for all the data checks) and build the working problem."""
    _check_settings(epsilon, max_iter, tol, check_every)
    if not isinstance(cost, torch.Tensor) or cost.dim() != 3 or not cost.is_floating_point():
        raise TransportInputError(f"cost must be a floating (B, n, m) tensor, got {_describe(cost)}")
    B, n, m = cost.shape
    for name, mask, shape in (("row_mask", row_mask, (B, n)), ("col_mask", col_mask, (B, m))):
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != shape:
            raise TransportInputError(f"{name} must be a bool tensor of shape {shape} (cost is {tuple(cost.shape)}), got {_describe(mask)}")
    dtype = torch.float64 if cost.dtype == torch.float64 else torch.float32
    cost = cost.detach().to(dtype)
    row_mask, col_mask = row_mask.to(cost.device), col_mask.to(cost.device)
    a = _marginal("a", a, row_mask, dtype)
    b = _marginal("b", b, col_mask, dtype)
    s = _mass_fraction(mass, B, cost.device, dtype)
    # First sync, on the masks only: empty examples, and whether the batch has any padding at all
    # (without, the (B, n, m) masked copies of the cost are not needed: two passes over the batch less).
    mask_counts = [(~row_mask.any(dim=1)).sum(), (~col_mask.any(dim=1)).sum(), (~row_mask).sum() + (~col_mask).sum()]
    empty_rows, empty_cols, padding = torch.stack(mask_counts).tolist()
    if empty_rows or empty_cols:
        raise TransportInputError(
            f"empty example(s): {empty_rows} with no unmasked rows, {empty_cols} with no unmasked columns "
            f"(first: {_first(~row_mask.any(dim=1) | ~col_mask.any(dim=1))}); every pair needs at least one token and one patch")

    if padding:
        padded = ~(row_mask.unsqueeze(2) & col_mask.unsqueeze(1))
        cost_filled = cost.masked_fill(padded, 0.0)
        cost_inf = cost.masked_fill(padded, math.inf)
        cost_min = cost_inf.amin(dim=(1, 2))
    else:
        padded, cost_filled, cost_inf = None, cost, None
        cost_min = cost.amin(dim=(1, 2))
    # The sum of the unpadded costs is NaN or inf exactly when one of them is (or when they are too
    # large to add up, which is as unusable). amin and a sum, not torch.aminmax over a dim, which is slower.
    finite = torch.isfinite(cost_filled.sum(dim=(1, 2)))
    counts = [
        (~finite).sum(),
        (~torch.isfinite(a)).sum() + (a < 0).sum() + (~torch.isfinite(b)).sum() + (b < 0).sum(),
        (a.sum(dim=1) <= 0).sum() + (b.sum(dim=1) <= 0).sum(),
    ]
    bad_costs, bad_marginals, no_mass = torch.stack(counts).tolist()
    if bad_costs:
        raise TransportInputError(
            f"cost has NaN or infinite values on unmasked entries in {bad_costs} example(s) (first: "
            f"{_first(~finite)}); padded entries may hold anything")
    if bad_marginals:
        raise TransportInputError("marginals a and b must be finite and >= 0 on unmasked entries")
    if no_mass:
        raise TransportInputError("every example needs a positive total marginal mass on its unmasked entries")
    total = torch.minimum(a.sum(dim=1), b.sum(dim=1))
    return Problem(cost_inf=cost_inf, cost_filled=cost_filled, padded=padded, cost_min=cost_min, a=a, b=b, mass=s * total,
                   row_mask=row_mask, col_mask=col_mask)


def _check_settings(epsilon, max_iter, tol, check_every) -> None:
    if not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon) or epsilon <= 0:
        raise TransportInputError(f"epsilon must be a finite number > 0, got {epsilon!r}")
    if not isinstance(max_iter, int) or max_iter < 1:
        raise TransportInputError(f"max_iter must be an int >= 1, got {max_iter!r}")
    if not isinstance(check_every, int) or check_every < 1:
        raise TransportInputError(f"check_every must be an int >= 1, got {check_every!r}")
    if not isinstance(tol, (int, float)) or not tol >= 0:
        raise TransportInputError(f"tol must be a number >= 0, got {tol!r}")


def _mass_fraction(mass, batch: int, device, dtype) -> torch.Tensor:
    """s as a (B,) tensor, each in (0, 1]: above 1 there is not that much mass to move."""
    s = torch.as_tensor(mass, dtype=torch.float64).flatten()
    if s.numel() not in (1, batch):
        raise TransportInputError(f"mass must be a float or one value per example ({batch}), got {s.numel()} values")
    bad = s[~((s > 0) & (s <= 1))]
    if bad.numel():
        value = bad[0].item()
        why = "exceeds the available mass" if value > 1 else "is not positive" if value <= 0 else "is not a number"
        raise TransportInputError(
            f"mass fraction s={value} {why}: s must be in (0, 1], the fraction of min(sum a, sum b) to transport")
    return s.expand(batch).to(device=device, dtype=dtype)


def _marginal(name: str, given, mask: torch.Tensor, dtype) -> torch.Tensor:
    """Uniform over the unmasked entries by default; padded entries always carry 0."""
    if given is None:
        weights = mask.to(dtype)
        return weights / weights.sum(dim=1, keepdim=True).clamp_min(1.0)
    if not isinstance(given, torch.Tensor) or tuple(given.shape) != tuple(mask.shape):
        raise TransportInputError(f"{name} must be a tensor of shape {tuple(mask.shape)}, got {_describe(given)}")
    return torch.where(mask, given.to(device=mask.device, dtype=dtype), 0.0)


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__


def _first(flags: torch.Tensor) -> int:
    return int(flags.nonzero()[0, 0])
