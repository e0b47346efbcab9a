"""Batched entropic partial optimal transport: the fast solver training calls every step.

The problem (METHOD.md): for each example b of a batch,

    T* = argmin <T, C> - eps H(T)   s.t.  T >= 0,  T 1 <= a,  T^T 1 <= b,  1^T T 1 = s * min(|a|, |b|).

POT's `ot.partial.entropic_partial_wasserstein` solves it with Dykstra's algorithm (Benamou et al.
2015): cyclic KL projections onto {T 1 <= a}, {T^T 1 <= b} and {total mass}, each with a correction
matrix. Every projection here is a diagonal scaling, so each correction matrix is a row vector, a
column vector or a scalar, and Dykstra's iterates are exactly those of the block-coordinate ascent
on the dual below (with f, g <= 0 the duals of the inequalities and h that of the total mass):

    f = min(log a - LSE_j(-C/eps + g + h), 0)
    g = min(log b - LSE_i(-C/eps + f + h), 0)
    h = log m - LSE_ij(-C/eps + f + g)

which is what runs here, batched and started from POT's starting point, so the plans agree with
POT's iteration by iteration (to rounding). Speed comes from the scaling form: plan = u_i K_ij c_j
with K = exp((alpha_i + beta_j + gamma - C_ij) / eps), u = e^f and c = e^(g + h) up to the
potentials, so a sweep is two batched mat-vecs and a few vector operations. Stability comes from
Schmitzer's absorption: when a scaling grows past `ABSORB_AT` its log moves into the potentials
alpha, beta, gamma (kept in cost units so they survive a change of eps) and K is rebuilt.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pipeline.errors import ConfigError

# Scalings beyond this factor (checked with the convergence test) are folded into the potentials,
# which keeps the products u K c far inside float32's 3e38; the divisions are clamped, so no scaling
# is ever inf between checks. Rare enough that the rebuild of K (an exp over the batch) never happens
# on the training problem at eps = 0.05.
ABSORB_AT = 1e10


@dataclass
class PartialOTResult:
    plan: torch.Tensor            # (B, n, m), exactly 0 on padded rows and columns
    cost: torch.Tensor            # (B,) <T, C> over the unpadded entries
    iterations: int | torch.Tensor  # iterations run (one count for the batch; per pair for POT)
    marginal_error: torch.Tensor  # (B,) L1 violation of the optimality conditions on the marginals
    converged: bool = True        # every example reached tol before the iteration cap


def partial_ot(
    cost: torch.Tensor,
    row_mask: torch.Tensor,
    col_mask: torch.Tensor,
    mass: float | torch.Tensor,
    epsilon: float,
    *,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    check_every: int = 10,
    eps_scaling: bool = False,
    eps_scaling_factor: float = 0.5,
    eps_stage_iter: int = 50,
) -> PartialOTResult:
    """Entropic partial OT for a batch of padded problems; see the module docstring.

    cost (B, n, m); row_mask (B, n) and col_mask (B, m) bool, True where an entry exists. a, b: the
    marginals (default uniform over the unpadded entries). mass: the fraction s in (0, 1] of
    min(|a|, |b|) to transport, a float or one per example. Stops when every example's marginal
    error is <= tol (checked every `check_every` iterations) or after `max_iter` iterations.
    eps_scaling: solve at geometrically shrinking eps (by `eps_scaling_factor`, at most
    `eps_stage_iter` iterations each) from the cost range down to `epsilon`, warm-starting each
    stage; it helps at small eps. Float64 input runs in float64, anything else in float32.
    """
    with torch.no_grad(), torch.autocast(cost.device.type, enabled=False):
        problem = check_problem(cost, row_mask, col_mask, mass, epsilon, a, b, max_iter, tol, check_every)
        state = _DualState(problem)
        iterations, error = 0, None
        for stage_eps in _eps_schedule(problem, epsilon, eps_scaling, eps_scaling_factor):
            # The eps-scaling stages leave at least one sweep of the cap to the final eps.
            remaining = max_iter - iterations
            budget = remaining if stage_eps == epsilon else min(eps_stage_iter, remaining - 1)
            if budget < 1:
                continue
            state.set_epsilon(stage_eps)
            ran, error = state.iterate(budget, tol, check_every)
            iterations += ran
        plan = state.take_plan()
        return PartialOTResult(
            plan=plan,
            cost=torch.linalg.vecdot(plan.flatten(1), problem.cost_filled.flatten(1)),
            iterations=iterations,
            marginal_error=error,
            converged=bool((error <= tol).all()),
        )


def _eps_schedule(problem, epsilon: float, eps_scaling: bool, factor: float) -> list[float]:
    """Geometric from the largest cost range in the batch down to epsilon (just epsilon without scaling)."""
    if not eps_scaling:
        return [epsilon]
    if not 0.0 < factor < 1.0:
        raise TransportInputError(f"eps_scaling_factor must be in (0, 1), got {factor}")
    # Start at the largest cost spread in the batch (padding counted as 0 can only widen it):
    # at eps that large every row of the plan is nearly uniform, an easy problem to warm-start from.
    spread = (problem.cost_filled.amax(dim=(1, 2)) - problem.cost_min).amax().item()
    start = max(spread, epsilon)
    stages = math.ceil(math.log(start / epsilon) / math.log(1.0 / factor)) if start > epsilon else 0
    return [max(start * factor**k, epsilon) for k in range(stages)] + [epsilon]


class _DualState:
    """Absorbed potentials (alpha, beta, gamma, in cost units) and scalings: plan = u_i K_ij c_j.

    c = v * w folds the mass scaling w into the column scaling (one multiply less per sweep); w is
    kept apart only because the column cap applies to v alone. The scalings are kept as row
    vectors, (B, 1, n) and (B, 1, m), the shape torch's bmm is fastest with on both products.
    """

    def __init__(self, problem: "Problem"):
        self.p = problem
        B, n, m = problem.cost_filled.shape
        like = dict(dtype=problem.cost_filled.dtype, device=problem.cost_filled.device)
        self.alpha = torch.zeros(B, 1, n, **like)
        self.beta = torch.zeros(B, 1, m, **like)
        # The per-example minimum cost goes into gamma first, so the largest entry of the first
        # kernel is exactly 1 whatever the offset of C (costs in [5, 7] at eps = 2e-3 included).
        self.gamma = problem.cost_min.view(B, 1, 1).clone()
        self.a, self.b = problem.a.unsqueeze(1), problem.b.unsqueeze(1)
        self.mass = problem.mass.view(B, 1, 1)
        self.rows, self.cols = problem.row_mask.unsqueeze(1), problem.col_mask.unsqueeze(1)
        self.tiny = torch.finfo(like["dtype"]).tiny
        self.eps = self.c = self.w = self.Kc = None
        self.u = torch.empty(B, 1, n, **like)
        # Every sweep writes into these: a fresh 128 KB tensor per operation costs page faults,
        # which on these VMs took longer than the arithmetic.
        self.row_tmp, self.col_tmp = torch.empty(B, 1, n, **like), torch.empty(B, 1, m, **like)
        self.KTu, self.c_raw, self.col_cap = (torch.empty(B, 1, m, **like) for _ in range(3))

    def set_epsilon(self, eps: float) -> None:
        if self.eps is not None:
            self._absorb()
        self.eps = eps
        self._rebuild_kernel()
        if self.c is None:
            # POT's start: K = exp(-C/eps) scaled to carry exactly the mass m, no scaling yet.
            self.w = self.mass / self.K.sum(dim=(1, 2), keepdim=True)
            self.c = self.cols.to(self.K.dtype) * self.w
            self.Kc = torch.bmm(self.c, self.KT)

    def _rebuild_kernel(self) -> None:
        # K = exp((alpha_i + beta_j + gamma - C_ij) / eps), built in place: three passes over the
        # batch, or one more per nonzero potential. The cost is +inf on padded entries, which
        # therefore get exactly 0 and never carry mass. The first K takes over cost_inf's memory.
        if self.p.cost_inf is not None:
            shifted, self.p.cost_inf = self.p.cost_inf, None
        else:
            shifted = self.p.cost_filled.masked_fill(self.p.padded, math.inf)
        shifted.sub_(self.gamma)
        if self.c is not None:  # potentials other than gamma exist only after an absorption
            shifted.sub_(self.alpha.transpose(1, 2)).sub_(self.beta)
        self.K = shifted.mul_(-1.0 / self.eps).exp_()
        self.KT = self.K.transpose(1, 2)
        # The caps keep the total duals f = alpha/eps + log u and g = beta/eps + log v at most 0.
        # Clamped to the largest float so that no inf ever meets a 0 (scalings stay below it anyway).
        largest = torch.finfo(self.K.dtype).max
        self.u_cap = torch.exp(-self.alpha / self.eps).clamp_max(largest)
        self.v_cap = torch.exp(-self.beta / self.eps).clamp_max(largest)
        if self.c is not None:
            self.Kc = torch.bmm(self.c, self.KT)

    def _absorb(self) -> None:
        """Fold the scalings into the potentials; the plan stays the same, the scalings become 1."""
        eps, tiny = self.eps, self.tiny
        log_w = torch.log(self.w.clamp_min(tiny))
        log_v = torch.log(self.c.clamp_min(tiny)) - log_w
        self.alpha = torch.where(self.rows, self.alpha + eps * torch.log(self.u.clamp_min(tiny)), 0.0)
        self.beta = torch.where(self.cols, self.beta + eps * log_v, 0.0)
        self.gamma = self.gamma + eps * log_w
        self.u = self.rows.to(self.K.dtype)
        self.c = self.cols.to(self.K.dtype)
        self.w = torch.ones_like(self.w)

    def iterate(self, budget: int, tol: float, check_every: int) -> tuple[int, torch.Tensor]:
        """Run up to `budget` Dykstra sweeps; returns the sweeps run and the last marginal error."""
        a, b, mass, K, KT, tiny = self.a, self.b, self.mass, self.K, self.KT, self.tiny
        row_tmp, col_tmp, KTu, c, col_cap = self.row_tmp, self.col_tmp, self.KTu, self.c_raw, self.col_cap
        for it in range(1, budget + 1):
            # Row projection. Dykstra's correction undoes the previous row scaling first, which is
            # why u is recomputed from scratch and capped on the total dual, not multiplied.
            torch.div(a, torch.clamp_min(self.Kc, tiny, out=row_tmp), out=row_tmp)
            torch.minimum(row_tmp, self.u_cap, out=self.u)
            torch.bmm(self.u, K, out=KTu)
            # Column projection (capped the same way), then the total-mass projection as one scale.
            torch.mul(self.v_cap, self.w, out=col_cap)
            torch.div(b, torch.clamp_min(KTu, tiny, out=col_tmp), out=col_tmp)
            torch.minimum(col_tmp, col_cap, out=c)
            scale = mass / torch.linalg.vecdot(c, KTu).unsqueeze(2).clamp_min(tiny)
            torch.mul(c, scale, out=self.c)
            self.w.mul_(scale)
            torch.bmm(self.c, KT, out=self.Kc)  # for the next row projection, and this sweep's check
            if it % check_every == 0 or it == budget:
                error = kkt_marginal_error((self.u * self.Kc).squeeze(1), (self.c * KTu).squeeze(1), self.p.a,
                                           self.p.b, (self.u < self.u_cap).squeeze(1), (c < col_cap).squeeze(1))
                # The only host sync: the convergence test and the absorption test together.
                worst_error, worst_log_scaling = torch.stack([error.max(), self._largest_log_scaling()]).tolist()
                if worst_error <= tol or it == budget:
                    return it, error
                if worst_log_scaling > math.log(ABSORB_AT):
                    self._absorb()
                    self._rebuild_kernel()
                    K, KT = self.K, self.KT
        raise AssertionError("unreachable: the last sweep always returns")

    def _largest_log_scaling(self) -> torch.Tensor:
        tiny = self.tiny
        logs = [torch.log(s.clamp_min(tiny)).abs().masked_fill(~mask, 0.0).amax()
                for s, mask in ((self.u, self.rows), (self.c, self.cols))]
        return torch.stack(logs + [torch.log(self.w.clamp_min(tiny)).abs().amax()]).amax()

    def take_plan(self) -> torch.Tensor:
        """The plan u K c, written over K (the last use of K: one batch-sized allocation less)."""
        plan = self.K.mul_(self.u.transpose(1, 2)).mul_(self.c)
        self.K = self.KT = None
        return plan


def kkt_marginal_error(rows, cols, a, b, row_active, col_active) -> torch.Tensor:
    """(B,) L1 residual of the marginal optimality conditions of partial OT.

    Row sums above a count, and so do row sums below a on rows whose dual is active (< 0): there
    complementary slackness says the row must be full. Same for columns. The total mass needs no
    term: the last projection of every sweep makes it exact. Padded entries have a = 0 and sums 0.
    """
    row_gap = torch.where(row_active, (rows - a).abs(), (rows - a).clamp_min(0.0))
    col_gap = torch.where(col_active, (cols - b).abs(), (cols - b).clamp_min(0.0))
    return row_gap.sum(dim=1) + col_gap.sum(dim=1)


class TransportInputError(ConfigError, ValueError):
    """A transport problem that cannot be solved as given; a ValueError too, as POT raises."""


@dataclass
class Problem:
    """A checked batch in the working dtype: everything the iterations read."""
    cost_inf: torch.Tensor | None  # (B, n, m), +inf on padded entries; the first K is built in it
    cost_filled: torch.Tensor  # (B, n, m), 0 on padded entries
    padded: torch.Tensor       # (B, n, m) bool, True where a row or a column is padding
    cost_min: torch.Tensor     # (B,) smallest unpadded cost
    a: torch.Tensor            # (B, n), 0 on padded rows
    b: torch.Tensor            # (B, m), 0 on padded columns
    mass: torch.Tensor         # (B,) mass to transport: s * min(|a|, |b|)
    row_mask: torch.Tensor
    col_mask: torch.Tensor


def check_problem(cost, row_mask, col_mask, mass, epsilon, a, b, max_iter, tol, check_every) -> Problem:
    """Validate the inputs (one host sync for all the data checks) and build the working problem."""
    _check_settings(epsilon, max_iter, tol, check_every)
    if not isinstance(cost, torch.Tensor) or cost.dim() != 3 or not cost.is_floating_point():
        raise TransportInputError(f"cost must be a floating (B, n, m) tensor, got {_describe(cost)}")
    B, n, m = cost.shape
    for name, mask, shape in (("row_mask", row_mask, (B, n)), ("col_mask", col_mask, (B, m))):
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != shape:
            raise TransportInputError(f"{name} must be a bool tensor of shape {shape} (cost is {tuple(cost.shape)}), got {_describe(mask)}")
    dtype = torch.float64 if cost.dtype == torch.float64 else torch.float32
    cost = cost.to(dtype)
    row_mask, col_mask = row_mask.to(cost.device), col_mask.to(cost.device)
    padded = ~(row_mask.unsqueeze(2) & col_mask.unsqueeze(1))
    a = _marginal("a", a, row_mask, dtype)
    b = _marginal("b", b, col_mask, dtype)
    s = _mass_fraction(mass, B, cost.device, dtype)

    # Four passes over the batch in all; the sum of the unpadded costs is NaN or inf exactly when
    # one of them is (or when they are too large to add up, which is as unusable).
    cost_filled = cost.masked_fill(padded, 0.0)
    cost_inf = cost.masked_fill(padded, math.inf)
    cost_min = cost_inf.amin(dim=(1, 2))
    counts = [
        (~row_mask.any(dim=1)).sum(), (~col_mask.any(dim=1)).sum(),
        (~torch.isfinite(cost_filled.sum(dim=(1, 2)))).sum(),
        (~torch.isfinite(a)).sum() + (a < 0).sum() + (~torch.isfinite(b)).sum() + (b < 0).sum(),
        (a.sum(dim=1) <= 0).sum() + (b.sum(dim=1) <= 0).sum(),
    ]
    empty_rows, empty_cols, bad_costs, bad_marginals, no_mass = torch.stack(counts).tolist()
    if empty_rows or empty_cols:
        raise TransportInputError(
            f"empty example(s): {empty_rows} with no unmasked rows, {empty_cols} with no unmasked columns "
            f"(first: {_first(~row_mask.any(dim=1) | ~col_mask.any(dim=1))}); every pair needs at least one token and one patch")
    if bad_costs:
        raise TransportInputError(
            f"cost has NaN or infinite values on unmasked entries in {bad_costs} example(s) (first: "
            f"{_first(~torch.isfinite(cost_filled.sum(dim=(1, 2))))}); padded entries may hold anything")
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
