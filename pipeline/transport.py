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

from pipeline.transport_checks import Problem, TransportInputError, check_problem  # noqa: F401 (re-exported)

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

    Speed: a sweep is ten small ops around the two mat-vecs, each costing a few microseconds of
    dispatch (more right after a mat-vec), so every op counts: the caps are folded into the
    divisions, the mass scale comes from an n-long dot product, and c itself is only formed at the
    checks. Every op writes into a buffer allocated here (a fresh 128 KB tensor per op costs page
    faults), and u, c and w are views of one buffer, so that the check reduces all three at once.
    """

    def __init__(self, problem: Problem):
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
        self.eps = self.K = self.KT = None
        self.started = False
        self.scalings = torch.zeros(B, 1, n + m + 1, **like)
        self.u, self.c, self.w = self.scalings[..., :n], self.scalings[..., n:n + m], self.scalings[..., n + m:]
        # 1 on padded entries (where the scalings are exactly 0), 0 elsewhere: adding it leaves only
        # the unpadded scalings in the extremes the absorption test takes.
        self.padding_ones = torch.cat([~self.rows, ~self.cols, torch.zeros_like(self.cols[..., :1])], dim=2).to(**like)
        self.row_tmp, self.Kc = torch.empty(B, 1, n, **like), torch.empty(B, 1, n, **like)
        self.col_tmp, self.KTu, self.c_raw, self.col_cap = (torch.empty(B, 1, m, **like) for _ in range(4))
        self.dot, self.scale = torch.empty(B, 1, **like), torch.empty(B, 1, 1, **like)
        self.gaps = torch.empty(B, 1, n + m, **like)
        self.neg_marginals = -torch.cat([self.a, self.b], dim=2)
        self.active = torch.empty(B, 1, n + m, **like)
        self.extremes = torch.empty(B, 1, n + m + 1, **like)

    def set_epsilon(self, eps: float) -> None:
        if self.eps is not None:
            self._absorb()
        self.eps = eps
        self._rebuild_kernel()
        if not self.started:
            # POT's start: K = exp(-C/eps) scaled to carry exactly the mass m, no scaling yet.
            self.started = True
            torch.div(self.mass, self.K.sum(dim=(1, 2), keepdim=True), out=self.w)
            torch.mul(self.cols, self.w, out=self.c)
            torch.bmm(self.c, self.KT, out=self.Kc)

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
        self.KT = self.K.transpose(1, 2)
        # The caps keep the total duals f = alpha/eps + log u and g = beta/eps + log v at most 0.
        # Clamped to the largest float so that no inf ever meets a 0 (scalings stay below it anyway).
        largest = torch.finfo(self.K.dtype).max
        self.v_cap = torch.exp(-self.beta / self.eps).clamp_max(largest) if self.started else None
        # The row cap, u = min(a / Kc, u_cap), as one division: u = a / max(Kc, row_floor) with
        # row_floor = a / u_cap (at least tiny, so 0 / 0 never happens on padding). With u_cap = 1,
        # as until the first absorption, row_floor = a and the capped u = a / a = 1, bit for bit.
        # A row's dual is active (< 0) where u < u_cap_reached, the value a capped u takes exactly.
        u_cap = torch.exp(-self.alpha / self.eps).clamp_max(largest)
        self.row_floor = torch.where(self.a > 0, self.a / u_cap, 0.0).clamp_min(self.tiny)
        self.u_cap_reached = self.a / self.row_floor
        if self.started:
            torch.bmm(self.c, self.KT, out=self.Kc)

    def _absorb(self) -> None:
        """Fold the scalings into the potentials; the plan stays the same, the scalings become 1."""
        eps, tiny = self.eps, self.tiny
        log_w = torch.log(self.w.clamp_min(tiny))
        log_v = torch.log(self.c.clamp_min(tiny)) - log_w
        self.alpha = torch.where(self.rows, self.alpha + eps * torch.log(self.u.clamp_min(tiny)), 0.0)
        self.beta = torch.where(self.cols, self.beta + eps * log_v, 0.0)
        self.gamma = self.gamma + eps * log_w
        self.u.copy_(self.rows)
        self.c.copy_(self.cols)
        self.w.fill_(1.0)

    def iterate(self, budget: int, tol: float, check_every: int) -> tuple[int, torch.Tensor]:
        """Run up to `budget` Dykstra sweeps; returns the sweeps run and the last marginal error."""
        a, b, mass, K, KT, tiny = self.a, self.b, self.mass, self.K, self.KT, self.tiny
        u, w, Kc, KTu, c_raw = self.u, self.w, self.Kc, self.KTu, self.c_raw
        row_tmp, col_tmp, dot, scale = self.row_tmp, self.col_tmp, self.dot, self.scale
        for it in range(1, budget + 1):
            # Row projection. Dykstra's correction undoes the previous row scaling first, which is
            # why u is recomputed from scratch and capped on the total dual, not multiplied.
            torch.div(a, torch.maximum(Kc, self.row_floor, out=row_tmp), out=u)
            torch.bmm(u, K, out=KTu)
            # Column projection, capped the same way (on v alone; until an absorption v_cap = 1).
            if self.v_cap is None:
                col_cap = w
            else:
                col_cap = torch.mul(self.v_cap, w, out=self.col_cap)
            torch.div(b, torch.clamp_min(KTu, tiny, out=col_tmp), out=col_tmp)
            torch.minimum(col_tmp, col_cap, out=c_raw)
            # The total-mass projection scales c by mass / <u, K c_raw>, the plan's mass; taken from
            # the next product's (n-long) result, it saves two m-long passes (c = c_raw * scale is
            # only formed by the check, which every exit from the loop passes).
            torch.bmm(c_raw, KT, out=Kc)
            torch.div(mass, torch.linalg.vecdot(u, Kc, out=dot).clamp_min_(tiny).unsqueeze(2), out=scale)
            Kc.mul_(scale)  # for the next row projection, and this sweep's check
            w.mul_(scale)
            if it % check_every == 0 or it == budget:
                error, worst_error, worst_log_scaling = self._check()
                if worst_error <= tol or it == budget:
                    return it, error
                if worst_log_scaling > math.log(ABSORB_AT):
                    self._absorb()
                    self._rebuild_kernel()
                    K, KT = self.K, self.KT
        raise AssertionError("unreachable: the last sweep always returns")

    def _check(self) -> tuple[torch.Tensor, float, float]:
        """The marginal errors (B,), the worst of them and the largest |log| of a scaling, with the
        only host sync of the iterations.

        The error is the L1 residual of partial OT's marginal optimality conditions: row sums above a
        count, and so do row sums below a on rows whose dual is active (< 0), where complementary
        slackness says the row must be full; the same for columns. The total mass needs no term: the
        last projection of every sweep makes it exact. Padded entries have a = 0 and sums 0."""
        n, tiny = self.u.shape[2], self.tiny
        gaps, active = self.gaps, self.active
        torch.mul(self.c_raw, self.scale, out=self.c)  # the sweeps leave c to here
        torch.addcmul(self.neg_marginals[..., :n], self.u, self.Kc, out=gaps[..., :n])  # row sums - a
        torch.addcmul(self.neg_marginals[..., n:], self.c, self.KTu, out=gaps[..., n:])  # column sums - b
        # active: 1.0 where the dual is active (< 0), so that the gap is |d| there, max(d, 0) elsewhere:
        # max(d, -active * d). Float masks and no torch.where: both were several times slower here.
        torch.lt(self.u, self.u_cap_reached, out=active[..., :n])
        # A capped column has c = c_raw * scale = w_before * scale = w exactly (the same product).
        if self.v_cap is None:
            torch.lt(self.c, self.w, out=active[..., n:])
        else:
            torch.lt(self.c_raw, self.col_cap, out=active[..., n:])
        error = torch.maximum(gaps, active.mul_(gaps).neg_(), out=active).sum(dim=2)
        low, high = torch.aminmax(torch.add(self.scalings, self.padding_ones, out=self.extremes))
        worst_error, low, high = torch.stack([error.max(), low, high]).tolist()
        # max |log s| over the unpadded scalings (log is monotonic; NaN compares false downstream).
        worst_log_scaling = max(math.log(max(high, tiny)), -math.log(max(low, tiny)))
        return error.squeeze(1), worst_error, worst_log_scaling

    def take_plan(self) -> torch.Tensor:
        """The plan u K c, written over K (the last use of K: one batch-sized allocation less)."""
        plan = self.K.mul_(self.u.transpose(1, 2)).mul_(self.c)
        self.K = self.KT = None
        return plan
