"""POT as the trusted reference: the same problems as `solver.partial_ot`, solved one pair at a time.

Slow by design: every pair goes to the CPU in float64 and through POT on its own. These are for
checking the fast solver, and for training runs that ask for the reference solver by name: only
then is POT (and with it SciPy) imported, see interface.py. Inputs are checked by the same code as
the fast solver, so both raise the same errors.
"""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import ot
import torch

from pipeline.transport.checks import check_problem
from pipeline.transport.solver import PartialOTResult


def pot_partial_exact(cost, row_mask, col_mask, mass, epsilon=None, *, a=None, b=None,
                      max_iter=1000, tol=1e-6) -> PartialOTResult:
    """Exact partial OT (`ot.partial.partial_wasserstein`, a network simplex) per pair.

    Same signature as `partial_ot`; epsilon, max_iter and tol do not apply to an exact solver and
    are only accepted so that callers can switch solvers by name. iterations is 0 per pair (POT
    does not report the simplex's pivots).
    """
    problem = check_problem(cost, row_mask, col_mask, mass, 1.0, a, b, 1, 0.0, 1)

    def solve(pair, a_k, b_k, cost_k, mass_k):
        return ot.partial.partial_wasserstein(a_k, b_k, cost_k, m=mass_k), 0

    return _per_pair(problem, solve)


def pot_partial_entropic(cost, row_mask, col_mask, mass, epsilon, *, a=None, b=None,
                         max_iter=1000, tol=1e-6, method="auto") -> PartialOTResult:
    """POT's entropic partial OT (Dykstra, Benamou et al. 2015) per pair.

    tol is POT's stopThr, which is not the fast solver's criterion: POT stops when the Frobenius
    norm of the plan's change over one iteration is below it. method: "sinkhorn" (POT's
    multiplicative form), "sinkhorn_log" (its log-domain form) or "auto": multiplicative, and
    log-domain for the pairs where the multiplicative form gives NaN, inf or the wrong total mass
    (the kernel exp(-C/eps) underflows at small eps or large costs); a warning names those pairs.
    """
    if method not in ("auto", "sinkhorn", "sinkhorn_log"):
        raise ValueError(f"method must be 'auto', 'sinkhorn' or 'sinkhorn_log', got {method!r}")
    problem = check_problem(cost, row_mask, col_mask, mass, epsilon, a, b, max_iter, tol, 1)
    fell_back = []

    def run(a_k, b_k, cost_k, mass_k, how):
        # POT prints its numerical-error warning; the fallback below reports it instead.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            plan, log = ot.partial.entropic_partial_wasserstein(
                a_k, b_k, cost_k, epsilon, m=mass_k, method=how, numItermax=max_iter,
                stopThr=tol, log=True)
        # POT logs its error every 10th iteration, starting at the first.
        return plan, min(10 * (len(log["err"]) - 1) + 1, max_iter)

    def solve(pair, a_k, b_k, cost_k, mass_k):
        plan, iterations = run(a_k, b_k, cost_k, mass_k, "sinkhorn_log" if method == "sinkhorn_log" else "sinkhorn")
        # A finite plan that lost mass is the same failure caught one step earlier.
        if method == "auto" and not (np.isfinite(plan).all() and abs(plan.sum() - mass_k) <= 1e-9 * mass_k):
            fell_back.append(pair)
            plan, iterations = run(a_k, b_k, cost_k, mass_k, "sinkhorn_log")
        return plan, iterations

    result = _per_pair(problem, solve)
    if fell_back:
        warnings.warn(f"POT's multiplicative entropic partial solver gave NaN/inf on pair(s) {fell_back} "
                      f"at eps={epsilon}; solved those in the log domain instead", RuntimeWarning, stacklevel=2)
    return result


def _per_pair(problem, solve) -> PartialOTResult:
    """Cut each pair out of the padded batch, solve it in float64 NumPy, paste the plan back."""
    B, n, m = problem.cost_filled.shape
    device, dtype = problem.cost_filled.device, problem.cost_filled.dtype
    plans = np.zeros((B, n, m))
    iterations = np.zeros(B, dtype=np.int64)
    cost = problem.cost_filled.double().cpu().numpy()
    a, b = problem.a.double().cpu().numpy(), problem.b.double().cpu().numpy()
    rows, cols = problem.row_mask.cpu().numpy(), problem.col_mask.cpu().numpy()
    mass = problem.mass.double().cpu().numpy()
    for k in range(B):
        r, c = np.flatnonzero(rows[k]), np.flatnonzero(cols[k])
        plan, iterations[k] = solve(k, a[k, r], b[k, c], np.ascontiguousarray(cost[k][np.ix_(r, c)]), float(mass[k]))
        plans[k][np.ix_(r, c)] = plan
    plan = torch.from_numpy(plans)
    error = primal_marginal_error(plan, torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(mass))
    return PartialOTResult(
        plan=plan.to(device=device, dtype=dtype),
        cost=(plan * torch.from_numpy(cost)).sum(dim=(1, 2)).to(device=device, dtype=dtype),
        iterations=torch.from_numpy(iterations),
        marginal_error=error.to(device=device, dtype=dtype),
        converged=bool(torch.isfinite(plan).all()),
    )


def primal_marginal_error(plan, a, b, mass) -> torch.Tensor:
    """(B,) L1 infeasibility of a plan: row and column sums above a and b, and the total mass off.

    POT returns no duals to judge complementary slackness by, so the reference reports this; for the
    fast solver's plans it is at most its `marginal_error`, up to rounding.
    """
    over_rows = (plan.sum(dim=2) - a).clamp_min(0.0).sum(dim=1)
    over_cols = (plan.sum(dim=1) - b).clamp_min(0.0).sum(dim=1)
    return over_rows + over_cols + (plan.sum(dim=(1, 2)) - mass).abs()
