"""The one interface training uses for optimal transport: a plan from a named solver, and the loss.

The loss is <T*, C> / s with T* held constant: by the envelope theorem the gradient of the optimal
value with respect to the cost is the plan itself, so nothing needs to flow through the solver's
iterations and their memory never grows with the iteration count.
"""
from __future__ import annotations

import functools
import math

import torch

from pipeline.errors import ConfigError
from pipeline.transport.solver import ITERS_PER_SPREAD, partial_ot


def _pot_exact(*args, **kwargs):
    # POT (and SciPy with it) loads only when a run asks for it: a second or so, and memory, otherwise.
    from pipeline.transport.reference import pot_partial_exact
    return pot_partial_exact(*args, **kwargs)


def _pot_entropic(*args, **kwargs):
    from pipeline.transport.reference import pot_partial_entropic
    return pot_partial_entropic(*args, **kwargs)


SOLVERS = {
    "sinkhorn": partial_ot,              # the fast batched solver (CPU or CUDA)
    # The same, its sweeps through torch.compile: faster once compiled (compiling costs time in every process
    # and shape family); falls back to "sinkhorn" with a warning where compilation is not possible.
    "sinkhorn-compiled": functools.partial(partial_ot, compiled=True),
    "pot-exact": _pot_exact,             # POT's network simplex per pair, epsilon ignored
    "pot-entropic": _pot_entropic,       # POT's Dykstra per pair, the reference for "sinkhorn"
}


def solve_plan(cost: torch.Tensor, row_mask: torch.Tensor, col_mask: torch.Tensor, *,
               mass: float | torch.Tensor, epsilon: float, solver: str = "sinkhorn",
               max_iter: int = 1000, tol: float = 1e-6, patch_capacity: float = 1.0,
               iters_per_spread: float = ITERS_PER_SPREAD,
               return_errors: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The (B, n, m) float32 plan on cost's device, detached; padded entries are exactly 0. With
    return_errors, (plan, marginal_error): the solver's (B,) marginal error of each pair as well, so a
    caller can see which plans stopped at their iteration budget before reaching tol (the plan is the same
    either way). The batched solvers' budget is max_iter, raised to iters_per_spread x (cost spread /
    epsilon) where that is more, so that a small epsilon still converges (solver.ITERS_PER_SPREAD).

    Row marginals are uniform over the unmasked rows (a_i = 1/n). Each column (patch) may take up to
    patch_capacity / m: 1 is the paper summary's uniform marginals; above 1 an object covering a few patches can
    take the mass of every word that names it instead of spilling it onto the background (docs/method.md).
    Above 1 the total mass stays s (s * min(sum a, sum b) with sum a = 1)."""
    if solver not in SOLVERS:
        raise ConfigError(f"OT solver must be one of {sorted(SOLVERS)}, got {solver!r}")
    if not patch_capacity > 0:
        raise ConfigError(f"patch capacity must be positive, got {patch_capacity}")
    b = None
    if patch_capacity != 1.0:   # None keeps the solvers' own uniform default: today's problem bit for bit
        cols = col_mask.to(torch.float64)
        b = patch_capacity * cols / cols.sum(dim=1, keepdim=True).clamp_min(1.0)
    # POT's solvers keep their fixed iteration count: the reference is slow, and exact needs none.
    budget = {"iters_per_spread": iters_per_spread} if solver.startswith("sinkhorn") else {}
    result = SOLVERS[solver](cost.detach(), row_mask, col_mask, mass, epsilon, b=b, max_iter=max_iter, tol=tol,
                             **budget)
    plan = result.plan.to(device=cost.device, dtype=torch.float32)
    if return_errors:
        return plan, result.marginal_error.detach()
    return plan


class ConvergenceTally:
    """Over many solves: how many plans ended with a marginal error above tol (the solver stopped at its
    iteration cap first) and the largest error seen. A plan that did not converge is still used, so
    without this count a too-small max_iter or eps would only show as a slightly wrong loss."""

    def __init__(self, tol: float):
        self.tol, self.plans, self.unconverged, self.worst = float(tol), 0, 0, 0.0

    def add(self, errors: torch.Tensor) -> None:
        errors = errors.detach().to(device="cpu", dtype=torch.float64).reshape(-1)
        if not errors.numel():
            return
        # A non-finite error never passes the test either (NaN > tol is False, hence "not <=").
        errors = torch.nan_to_num(errors, nan=math.inf)
        self.plans += errors.numel()
        self.unconverged += int((~(errors <= self.tol)).sum())
        self.worst = max(self.worst, float(errors.max()))

    def share(self) -> float:
        return self.unconverged / max(self.plans, 1)

    def result(self) -> dict:
        return {"unconverged": self.share(), "max_marginal_error": self.worst}


def ot_loss(cost: torch.Tensor, plan: torch.Tensor, mass: float | torch.Tensor) -> torch.Tensor:
    """(B,) <T, C> / s, differentiable in the cost only (the plan is treated as a constant)."""
    if isinstance(mass, (int, float)) and not 0 < mass <= 1:
        raise ConfigError(f"mass fraction s must be in (0, 1], got {mass}")
    plan = plan.detach()
    # Where the plan is 0 (padding included) the cost does not count, even if it is not finite there.
    weighted = torch.where(plan != 0, plan * cost, torch.zeros((), dtype=cost.dtype, device=cost.device))
    return weighted.sum(dim=(1, 2)) / torch.as_tensor(mass, dtype=weighted.dtype, device=weighted.device)
