"""The one interface training uses for optimal transport: a plan from a named solver, and the loss.

The loss is <T*, C> / s with T* held constant: by the envelope theorem the gradient of the optimal
value with respect to the cost is the plan itself, so nothing needs to flow through the solver's
iterations and their memory never grows with the iteration count.
"""
from __future__ import annotations

import functools

import torch

from pipeline.errors import ConfigError
from pipeline.ot_reference import pot_partial_entropic, pot_partial_exact
from pipeline.transport import partial_ot

SOLVERS = {
    "sinkhorn": partial_ot,              # the fast batched solver (CPU or CUDA)
    # The same, its sweeps through torch.compile: 2-3x faster once compiled (a few seconds per process
    # and shape family); falls back to "sinkhorn" with a warning where compilation is not possible.
    "sinkhorn-compiled": functools.partial(partial_ot, compiled=True),
    "pot-exact": pot_partial_exact,      # POT's network simplex per pair, epsilon ignored
    "pot-entropic": pot_partial_entropic,  # POT's Dykstra per pair, the reference for "sinkhorn"
}


def solve_plan(cost: torch.Tensor, row_mask: torch.Tensor, col_mask: torch.Tensor, *,
               mass: float | torch.Tensor, epsilon: float, solver: str = "sinkhorn",
               max_iter: int = 1000, tol: float = 1e-6) -> torch.Tensor:
    """The (B, n, m) float32 plan on cost's device, detached; padded entries are exactly 0."""
    if solver not in SOLVERS:
        raise ConfigError(f"OT solver must be one of {sorted(SOLVERS)}, got {solver!r}")
    result = SOLVERS[solver](cost.detach(), row_mask, col_mask, mass, epsilon, max_iter=max_iter, tol=tol)
    return result.plan.to(device=cost.device, dtype=torch.float32)


def ot_loss(cost: torch.Tensor, plan: torch.Tensor, mass: float | torch.Tensor) -> torch.Tensor:
    """(B,) <T, C> / s, differentiable in the cost only (the plan is treated as a constant)."""
    if isinstance(mass, (int, float)) and not 0 < mass <= 1:
        raise ConfigError(f"mass fraction s must be in (0, 1], got {mass}")
    plan = plan.detach()
    # Where the plan is 0 (padding included) the cost does not count, even if it is not finite there.
    weighted = torch.where(plan != 0, plan * cost, torch.zeros((), dtype=cost.dtype, device=cost.device))
    return weighted.sum(dim=(1, 2)) / torch.as_tensor(mass, dtype=weighted.dtype, device=weighted.device)
