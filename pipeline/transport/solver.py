"""Batched entropic partial optimal transport: the fast solver training calls every step.

The problem (docs/transport.md): for each example b of a batch,

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

The sweeps between two convergence checks are one pure function (sweeps.py), run eagerly or, with
`compiled=True`, through torch.compile.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pipeline.transport.checks import Problem, TransportInputError, check_problem
from pipeline.transport.sweeps import block_function

# Scalings beyond this factor (checked with the convergence test) are folded into the potentials,
# which keeps the products u K c far inside float32's 3e38; the divisions are clamped, so no scaling
# is ever inf between checks. Rare enough that the rebuild of K (an exp over the batch) never happens
# on the training problem at eps = 0.05.
ABSORB_AT = 1e10

# The sweeps a problem needs grow like (cost spread) / eps; this factor covers what random problems at
# tol = 1e-6 need per unit of that ratio, up to s near 1 (docs/transport.md has the counts). With
# iters_per_spread the budget follows the ratio, so a small eps gets the sweeps it needs; at
# training's eps = 0.05 on costs in [0, 2] it asks for 1000 at most, train.ot_max_iter's default.
ITERS_PER_SPREAD = 25
# However small eps gets, the budget that ratio asks for stops here, so one solve's time stays bounded; a
# plan stopped at it is reported unconverged like any other.
MAX_ADAPTIVE_ITER = 100_000


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
    iters_per_spread: float = 0.0,
    tol: float = 1e-6,
    check_every: int = 10,
    eps_scaling: bool = False,
    eps_scaling_factor: float = 0.5,
    eps_stage_iter: int = 50,
    compiled: bool = False,
) -> PartialOTResult:
    """Entropic partial OT for a batch of padded problems; see the module docstring.

    cost (B, n, m); row_mask (B, n) and col_mask (B, m) bool, True where an entry exists. a, b: the
    marginals (default uniform over the unpadded entries). mass: the fraction s in (0, 1] of
    min(|a|, |b|) to transport, a float or one per example. Stops when every example's marginal
    error is <= tol (checked every `check_every` iterations) or after its iteration budget: max_iter,
    or more where iters_per_spread x (cost spread / epsilon) is larger (0: max_iter alone; see
    ITERS_PER_SPREAD, what solve_plan uses).
    eps_scaling: solve at geometrically shrinking eps (by `eps_scaling_factor`, at most
    `eps_stage_iter` iterations each) from the cost range down to `epsilon`, warm-starting each
    stage; it helps at small eps. Float64 input runs in float64, anything else in float32.
    compiled: run the sweeps through torch.compile (CPU or CUDA, the same code): faster per sweep, after a
    one-off compilation in every process (see sweeps.py; bench/RESULTS.md, "The partial OT solver").
    """
    with torch.no_grad(), torch.autocast(cost.device.type, enabled=False):
        problem = check_problem(cost, row_mask, col_mask, mass, epsilon, a, b, max_iter, tol, check_every)
        budget_total = _iteration_budget(problem, epsilon, max_iter, iters_per_spread)
        state = _DualState(problem, compiled)
        iterations, error = 0, None
        for stage_eps in _eps_schedule(problem, epsilon, eps_scaling, eps_scaling_factor):
            # The eps-scaling stages leave at least one sweep of the cap to the final eps.
            remaining = budget_total - iterations
            budget = remaining if stage_eps == epsilon else min(eps_stage_iter, remaining - 1)
            if budget < 1:
                continue
            state.set_epsilon(stage_eps)
            ran, error = state.iterate(budget, tol, check_every)
            iterations += ran
        plan = state.take_plan()
        return PartialOTResult(
            plan=plan,
            cost=_total_cost(plan, problem.cost_filled),
            iterations=iterations,
            marginal_error=error,
            converged=bool((error <= tol).all()),
        )


def _total_cost(plan: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
    """(B,) <T, C> as a batched dot product: a (B, n, m) product tensor would be a fresh allocation, paid
    for in page faults at every solve. Row by row, then summed: one long float32 dot product per pair
    rounds worse."""
    B, n, m = plan.shape
    return torch.bmm(plan.reshape(B * n, 1, m), cost.reshape(B * n, m, 1)).view(B, n).sum(dim=1)


def _cost_spread(problem: Problem) -> float:
    """The largest max - min of the unpadded costs over the batch (one host sync). Padding is left out: as
    a cost of 0 it would widen the spread of costs far from 0 (all in [-1, -0.9]: 0.1 -> 1)."""
    cost = problem.cost_filled if problem.padded is None else problem.cost_filled.masked_fill(problem.padded, -math.inf)
    return (cost.amax(dim=(1, 2)) - problem.cost_min).amax().item()


def _iteration_budget(problem: Problem, epsilon: float, max_iter: int, iters_per_spread: float) -> int:
    """max_iter, or iters_per_spread x spread / epsilon sweeps where that is more (capped, see above)."""
    if not isinstance(iters_per_spread, (int, float)) or not 0 <= iters_per_spread < math.inf:
        raise TransportInputError(f"iters_per_spread must be a finite number >= 0, got {iters_per_spread!r}")
    if iters_per_spread == 0:
        return max_iter
    wanted = min(iters_per_spread * _cost_spread(problem) / epsilon, MAX_ADAPTIVE_ITER)
    return max(max_iter, math.ceil(wanted))


def _eps_schedule(problem, epsilon: float, eps_scaling: bool, factor: float) -> list[float]:
    """Geometric from the largest cost range in the batch down to epsilon (just epsilon without scaling)."""
    if not eps_scaling:
        return [epsilon]
    if not 0.0 < factor < 1.0:
        raise TransportInputError(f"eps_scaling_factor must be in (0, 1), got {factor}")
    # Start at the largest cost spread in the batch:
    # at eps that large every row of the plan is nearly uniform, an easy problem to warm-start from.
    start = max(_cost_spread(problem), epsilon)
    stages = math.ceil(math.log(start / epsilon) / math.log(1.0 / factor)) if start > epsilon else 0
    return [max(start * factor**k, epsilon) for k in range(stages)] + [epsilon]


class _DualState:
    """Absorbed potentials (alpha, beta, gamma, in cost units) and scalings: plan = u_i K_ij c_j.

    c = v * w folds the mass scaling w into the column scaling (one multiply less per sweep); w is
    kept apart only because the column cap applies to v alone. The scalings are kept as row
    vectors, (B, 1, n) and (B, 1, m), the shape torch's bmm is fastest with on both products.
    The sweeps themselves are `_sweep_block`, a pure function of these tensors (see there).
    """

    def __init__(self, problem: Problem, compiled: bool):
        self.p = problem
        self.compiled = compiled
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
        self.eps = self.K = None
        self.started = False
        self.u, self.c, self.w = torch.zeros(B, 1, n, **like), torch.zeros(B, 1, m, **like), torch.zeros(B, 1, 1, **like)
        # 1 on padded entries (where the scalings are exactly 0), 0 elsewhere: adding it leaves only
        # the unpadded scalings in the extremes the absorption test takes.
        self.padding_ones = torch.cat([~self.rows, ~self.cols, torch.zeros_like(self.cols[..., :1])], dim=2).to(**like)

    def set_epsilon(self, eps: float) -> None:
        if self.eps is not None:
            self._absorb()
        self.eps = eps
        self._rebuild_kernel()
        if not self.started:
            # POT's start: K = exp(-C/eps) scaled to carry exactly the mass m, no scaling yet.
            self.started = True
            self.w = self.mass / self.K.sum(dim=(1, 2), keepdim=True)
            self.c = self.cols * self.w
            self.Kc = torch.bmm(self.c, self.K.mT)

    def _rebuild_kernel(self) -> None:
        # K = exp((alpha_i + beta_j + gamma - C_ij) / eps), built in place: three passes over the
        # batch, or one more per nonzero potential. The cost is +inf on padded entries, which
        # therefore get exactly 0 and never carry mass. The first K takes over cost_inf's memory
        # (or, without padding, is the one fresh copy of the cost).
        p = self.p
        if p.cost_inf is not None:
            shifted, p.cost_inf = p.cost_inf, None
            shifted.sub_(self.gamma)
        elif p.padded is not None:
            shifted = p.cost_filled.masked_fill(p.padded, math.inf).sub_(self.gamma)
        else:
            shifted = torch.sub(p.cost_filled, self.gamma)
        if self.started:  # potentials other than gamma exist only after an absorption
            shifted.sub_(self.alpha.transpose(1, 2)).sub_(self.beta)
        self.K = shifted.mul_(-1.0 / self.eps).exp_()
        # The caps keep the total duals f = alpha/eps + log u and g = beta/eps + log v at most 0.
        # Clamped to the largest float so that no inf ever meets a 0 (scalings stay below it anyway).
        # Until the first absorption v_cap = 1, and 1 * w is w bit for bit.
        largest = torch.finfo(self.K.dtype).max
        self.v_cap = torch.exp(-self.beta / self.eps).clamp_max(largest)
        # The row cap, u = min(a / Kc, u_cap), as one division: u = a / max(Kc, row_floor) with
        # row_floor = a / u_cap (at least tiny, so 0 / 0 never happens on padding). With u_cap = 1,
        # as until the first absorption, row_floor = a and the capped u = a / a = 1, bit for bit.
        # A row's dual is active (< 0) where u < u_cap_reached, the value a capped u takes exactly.
        u_cap = torch.exp(-self.alpha / self.eps).clamp_max(largest)
        self.row_floor = torch.where(self.a > 0, self.a / u_cap, 0.0).clamp_min(self.tiny)
        self.u_cap_reached = self.a / self.row_floor
        if self.started:
            self.Kc = torch.bmm(self.c, self.K.mT)

    def _absorb(self) -> None:
        """Fold the scalings into the potentials; the plan stays the same, the scalings become 1."""
        eps, tiny = self.eps, self.tiny
        log_w = torch.log(self.w.clamp_min(tiny))
        log_v = torch.log(self.c.clamp_min(tiny)) - log_w
        self.alpha = torch.where(self.rows, self.alpha + eps * torch.log(self.u.clamp_min(tiny)), 0.0)
        self.beta = torch.where(self.cols, self.beta + eps * log_v, 0.0)
        self.gamma = self.gamma + eps * log_w
        self.u = self.rows.to(self.u.dtype)
        self.c = self.cols.to(self.c.dtype)
        self.w = torch.ones_like(self.w)

    def iterate(self, budget: int, tol: float, check_every: int) -> tuple[int, torch.Tensor]:
        """Run up to `budget` Dykstra sweeps; returns the sweeps run and the last marginal error."""
        done = 0
        while True:
            steps = min(check_every, budget - done)
            block = block_function(self.compiled and steps == check_every)  # one compiled size
            self.u, self.c, self.w, self.Kc, error, summary, _ = block(
                self.K, self.a, self.row_floor, self.u_cap_reached, self.b, self.v_cap, self.mass,
                self.padding_ones, self.Kc, self.w, steps, self.tiny)
            done += steps
            # The one host sync of the iterations.
            worst_error, low, high = summary.tolist()
            if worst_error <= tol or done == budget:
                return done, error
            # max |log s| over the unpadded scalings (log is monotonic; NaN compares false).
            worst_log_scaling = max(math.log(max(high, self.tiny)), -math.log(max(low, self.tiny)))
            if worst_log_scaling > math.log(ABSORB_AT):
                self._absorb()
                self._rebuild_kernel()

    def take_plan(self) -> torch.Tensor:
        """The plan u K c, written over K (the last use of K: one batch-sized allocation less)."""
        plan = self.K.mul_(self.u.transpose(1, 2)).mul_(self.c)
        self.K = None
        return plan
