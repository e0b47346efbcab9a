"""The fast partial OT solver against POT, in float64, on fresh random problems."""
import shutil

import numpy as np
import ot
import pytest
import torch

from pipeline.transport import partial_ot, solve_plan

SIZES = [(3, 5, 7), (2, 12, 40), (4, 20, 64)]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Problems this small gain nothing from a second thread, and the machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_problem(batch, n, m, seed, low=0.0, high=1.0):
    generator = torch.Generator().manual_seed(seed)
    cost = low + (high - low) * torch.rand(batch, n, m, generator=generator, dtype=torch.float64)
    return cost, torch.ones(batch, n, dtype=torch.bool), torch.ones(batch, m, dtype=torch.bool)


def uniform(k):
    return np.full(k, 1.0 / k)


def pot_entropic(cost, mass, eps, method="sinkhorn"):
    n, m = cost.shape
    return ot.partial.entropic_partial_wasserstein(uniform(n), uniform(m), cost, eps, m=mass,
                                                   method=method, numItermax=20000, stopThr=1e-13)


@pytest.mark.parametrize("batch,n,m", SIZES)
@pytest.mark.parametrize("mass", [0.3, 1.0])
def test_plan_is_feasible(batch, n, m, mass):
    cost, rows, cols = random_problem(batch, n, m, seed=n * m)
    tol = 1e-7
    # Near s = 1 the rows left below a fill only as the mass dual grows: many more sweeps.
    result = partial_ot(cost, rows, cols, mass, 0.05, tol=tol, max_iter=5000)
    plan = result.plan
    assert result.converged and (result.marginal_error <= tol).all()
    assert (plan >= 0).all()
    assert (plan.sum(dim=2) <= 1.0 / n + tol).all()
    assert (plan.sum(dim=1) <= 1.0 / m + tol).all()
    torch.testing.assert_close(plan.sum(dim=(1, 2)), torch.full((batch,), mass, dtype=torch.float64), rtol=0, atol=tol)
    torch.testing.assert_close(result.cost, (plan * cost).sum(dim=(1, 2)))


@pytest.mark.parametrize("batch,n,m", SIZES)
@pytest.mark.parametrize("mass,eps", [(0.5, 0.05), (0.2, 0.1), (0.8, 0.02)])
def test_cost_matches_pot_entropic_partial(batch, n, m, mass, eps):
    cost, rows, cols = random_problem(batch, n, m, seed=7 * n + m)
    result = partial_ot(cost, rows, cols, mass, eps, tol=1e-10, max_iter=20000)
    for k in range(batch):
        reference = pot_entropic(cost[k].numpy(), mass, eps)
        assert result.cost[k].item() == pytest.approx((reference * cost[k].numpy()).sum(), rel=1e-3)
        np.testing.assert_allclose(result.plan[k].numpy(), reference, atol=1e-6)


def test_given_marginals_match_pot():
    cost, rows, cols = random_problem(2, 7, 11, seed=41)
    generator = torch.Generator().manual_seed(41)
    a = torch.rand(2, 7, generator=generator, dtype=torch.float64) + 0.1
    b = 2.0 * torch.rand(2, 11, generator=generator, dtype=torch.float64) + 0.1
    result = partial_ot(cost, rows, cols, 0.6, 0.05, a=a, b=b, tol=1e-11, max_iter=20000)
    for k in range(2):
        # s is the fraction of the smaller of the two total masses.
        mass = 0.6 * min(a[k].sum().item(), b[k].sum().item())
        reference = ot.partial.entropic_partial_wasserstein(a[k].numpy(), b[k].numpy(), cost[k].numpy(), 0.05,
                                                            m=mass, numItermax=20000, stopThr=1e-13)
        np.testing.assert_allclose(result.plan[k].numpy(), reference, atol=1e-8)


def test_small_eps_approaches_exact_partial_wasserstein():
    """As eps -> 0 the entropic plan's cost tends to exact partial OT's: at eps = 1e-3 through solve_plan's
    defaults (the iteration budget grows with spread / eps), within 1 % of POT's network simplex, which
    solve_plan's "pot-exact" gives as is."""
    cost, rows, cols = random_problem(3, 8, 15, seed=3)
    plan, errors = solve_plan(cost, rows, cols, mass=0.5, epsilon=1e-3, tol=1e-9, return_errors=True)
    assert (errors <= 1e-9).all()
    exact_plans = solve_plan(cost, rows, cols, mass=0.5, epsilon=1e-3, solver="pot-exact")
    for k in range(3):
        exact = ot.partial.partial_wasserstein(uniform(8), uniform(15), cost[k].numpy(), m=0.5)
        np.testing.assert_allclose(exact_plans[k].numpy(), exact, atol=1e-7)
        entropic = (plan[k].double() * cost[k]).sum().item()
        assert entropic == pytest.approx((exact * cost[k].numpy()).sum(), rel=1e-2)
        assert entropic > (exact * cost[k].numpy()).sum()   # the exact plan is the cheapest


def test_full_mass_is_balanced_sinkhorn():
    cost, rows, cols = random_problem(2, 10, 16, seed=5)
    eps = 0.05
    result = partial_ot(cost, rows, cols, 1.0, eps, tol=1e-11, max_iter=20000)
    for k in range(2):
        balanced = ot.sinkhorn(uniform(10), uniform(16), cost[k].numpy(), eps, numItermax=20000, stopThr=1e-13)
        np.testing.assert_allclose(result.plan[k].numpy(), balanced, atol=1e-8)


@pytest.mark.parametrize("eps_scaling", [False, True])
def test_stable_where_the_multiplicative_form_underflows(eps_scaling):
    # exp(-C/eps) with C in [5, 7] and eps = 2e-3 is exp(-2500): 0 in any float format.
    cost, rows, cols = random_problem(2, 6, 9, seed=11, low=5.0, high=7.0)
    eps = 2e-3
    result = partial_ot(cost.float(), rows, cols, 0.5, eps, tol=1e-6, max_iter=5000, eps_scaling=eps_scaling)
    assert result.plan.dtype == torch.float32
    assert torch.isfinite(result.plan).all() and torch.isfinite(result.cost).all() and result.converged
    for k in range(2):
        reference = pot_entropic(cost[k].numpy(), 0.5, eps, method="sinkhorn_log")
        assert result.cost[k].item() == pytest.approx((reference * cost[k].numpy()).sum(), rel=1e-4)
        np.testing.assert_allclose(result.plan[k].double().numpy(), reference, atol=2e-5)


def test_tiny_eps_float32_with_padding_is_finite_and_matches_float64():
    cost, rows, cols = random_problem(3, 10, 30, seed=13)
    rows[0, 7:] = False
    cols[1, 20:] = False
    # At eps = 1e-3 one of these needs ~14k sweeps, in float64 as in float32: slow, not unstable.
    single = partial_ot(cost.float(), rows, cols, 0.5, 1e-3, tol=1e-6, max_iter=20000)
    double = partial_ot(cost, rows, cols, 0.5, 1e-3, tol=1e-6, max_iter=20000)
    assert single.converged and torch.isfinite(single.plan).all()
    assert (single.plan[0, 7:] == 0).all() and (single.plan[1, :, 20:] == 0).all()
    torch.testing.assert_close(single.plan.double(), double.plan, rtol=0, atol=1e-6)


def test_padded_problem_gives_the_unpadded_plan():
    cost, rows, cols = random_problem(3, 9, 14, seed=17)
    sizes = [(9, 14), (4, 11), (6, 3)]
    for k, (n, m) in enumerate(sizes):
        rows[k, n:] = False
        cols[k, m:] = False
        cost[k, n:, :] = float("nan")  # padding may hold anything
        cost[k, :, m:] = float("inf")
    padded = partial_ot(cost, rows, cols, 0.4, 0.05, tol=1e-12, max_iter=5000)
    for k, (n, m) in enumerate(sizes):
        alone = partial_ot(cost[k:k + 1, :n, :m], rows[k:k + 1, :n], cols[k:k + 1, :m], 0.4, 0.05, tol=1e-12, max_iter=5000)
        torch.testing.assert_close(padded.plan[k, :n, :m], alone.plan[0], rtol=0, atol=1e-12)
        assert (padded.plan[k, n:] == 0).all() and (padded.plan[k, :, m:] == 0).all()
        assert padded.cost[k].item() == pytest.approx(alone.cost[0].item(), rel=1e-10)


def test_plan_is_optimal_by_the_envelope_theorem():
    """d/dC of min <T,C> - eps H(T) is the optimal plan: finite differences of re-solved values."""
    cost, rows, cols = random_problem(1, 4, 6, seed=19)
    eps, mass = 0.1, 0.5

    def value(c):
        plan = partial_ot(c, rows, cols, mass, eps, tol=1e-13, max_iter=50000).plan
        return ((plan * c).sum() + eps * (plan * (torch.log(plan) - 1)).sum()).item()

    plan = partial_ot(cost, rows, cols, mass, eps, tol=1e-13, max_iter=50000).plan
    h = 1e-6
    for i, j in [(0, 0), (1, 3), (3, 5), (2, 2)]:
        step = torch.zeros_like(cost)
        step[0, i, j] = h
        derivative = (value(cost + step) - value(cost - step)) / (2 * h)
        assert derivative == pytest.approx(plan[0, i, j].item(), rel=1e-4, abs=1e-9)


def test_eps_scaling_reaches_the_same_plan():
    cost, rows, cols = random_problem(2, 7, 12, seed=23)
    plain = partial_ot(cost, rows, cols, 0.6, 0.02, tol=1e-11, max_iter=20000)
    scaled = partial_ot(cost, rows, cols, 0.6, 0.02, tol=1e-11, max_iter=20000, eps_scaling=True)
    torch.testing.assert_close(scaled.plan, plain.plan, rtol=0, atol=1e-9)


def test_iteration_cap_is_reported_as_not_converged():
    cost, rows, cols = random_problem(2, 8, 12, seed=29)
    result = partial_ot(cost, rows, cols, 0.5, 0.01, tol=1e-12, max_iter=7, check_every=5)
    assert result.iterations == 7 and not result.converged
    assert (result.marginal_error > 1e-12).any()


def test_float32_under_autocast_and_no_gradient():
    cost, rows, cols = random_problem(2, 6, 8, seed=31)
    cost32 = cost.float().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = partial_ot(cost32.bfloat16(), rows, cols, 0.5, 0.05, tol=1e-6)
    assert result.plan.dtype == torch.float32 and not result.plan.requires_grad
    reference = partial_ot(cost32.detach().bfloat16().float(), rows, cols, 0.5, 0.05, tol=1e-6)
    torch.testing.assert_close(result.plan, reference.plan)


def test_float32_agrees_with_float64():
    cost, rows, cols = random_problem(3, 20, 64, seed=37)
    single = partial_ot(cost.float(), rows, cols, 0.5, 0.05, tol=1e-6)
    double = partial_ot(cost, rows, cols, 0.5, 0.05, tol=1e-10)
    assert single.converged
    torch.testing.assert_close(single.cost.double(), double.cost, rtol=1e-4, atol=0)


def padded_problem(seed, low=0.0, high=1.0):
    cost, rows, cols = random_problem(4, 12, 40, seed=seed, low=low, high=high)
    rows[1, 9:] = False
    cols[2, 25:] = False
    return cost, rows, cols


def test_compiled_sweeps_give_the_eager_plans(monkeypatch):
    """torch.compile runs the same block with the products as fused sums: the same plans as eager. In float64
    the block is traced as torch.compile traces it (one graph, fused sums) and run by aot_eager, so the check
    is our code's to 1e-12; Inductor's C++ then compiles the float32 block, the one training runs (a float64
    compilation would double the test's time and check only Inductor)."""
    from pipeline.transport import sweeps

    cost, rows, cols = padded_problem(seed=41)
    traced = torch.compile(sweeps._sweep_block, fullgraph=True, backend="aot_eager")
    with monkeypatch.context() as m:
        m.setattr(sweeps, "_compiled_block", traced)  # unguarded: a tracing failure fails the test
        cases = [(partial_ot(cost, rows, cols, 0.5, 0.05, tol=1e-9, compiled=True), torch.float64, 1e-9, 1e-12)]
    cases.append((partial_ot(cost.float(), rows, cols, 0.5, 0.05, tol=1e-6, compiled=True), torch.float32, 1e-6, 1e-6))
    for compiled, dtype, tol, atol in cases:
        eager = partial_ot(cost.to(dtype), rows, cols, 0.5, 0.05, tol=tol)
        assert compiled.converged and compiled.plan.dtype == dtype
        torch.testing.assert_close(compiled.plan, eager.plan, rtol=0, atol=atol)
        assert (compiled.plan[1, 9:] == 0).all() and (compiled.plan[2, :, 25:] == 0).all()
    # Really compiled, not the eager fallback (which would give the same plans), wherever Inductor has a compiler.
    if shutil.which("c++") or shutil.which("g++"):
        from pipeline.transport import sweeps
        assert sweeps._compiled_block not in (None, False), "torch.compile fell back to eager (see the warning)"
    # What training gets with train.ot_solver = sinkhorn-compiled (float32 again: no recompilation).
    through_interface = solve_plan(cost.float(), rows, cols, mass=0.5, epsilon=0.05, solver="sinkhorn-compiled")
    torch.testing.assert_close(through_interface, partial_ot(cost.float(), rows, cols, 0.5, 0.05, compiled=True).plan,
                               rtol=0, atol=0)


def test_compiled_sweeps_absorb_where_the_multiplicative_form_underflows():
    # The same shapes as above (no recompilation), costs in [5, 7] at eps = 2e-3: absorptions happen,
    # and the compiled block then runs with column caps below 1.
    cost, rows, cols = padded_problem(seed=43, low=5.0, high=7.0)
    result = partial_ot(cost.float(), rows, cols, 0.5, 2e-3, tol=1e-6, max_iter=5000, compiled=True)
    reference = partial_ot(cost, rows, cols, 0.5, 2e-3, tol=1e-9, max_iter=20000)
    assert result.converged and torch.isfinite(result.plan).all()
    torch.testing.assert_close(result.cost.double(), reference.cost, rtol=1e-4, atol=0)


def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch):
    from pipeline.transport import sweeps

    def broken_compile(fn, **_):
        def run(*args):
            raise RuntimeError("no C++ compiler found")
        return run

    monkeypatch.setattr(sweeps, "_compiled_block", None)
    monkeypatch.setattr(torch, "compile", broken_compile)
    cost, rows, cols = random_problem(2, 5, 7, seed=47)
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*no C\\+\\+ compiler found.*eagerly"):
        result = partial_ot(cost, rows, cols, 0.5, 0.05, tol=1e-9, compiled=True)
    torch.testing.assert_close(result.plan, partial_ot(cost, rows, cols, 0.5, 0.05, tol=1e-9).plan, rtol=0, atol=0)
    assert sweeps._compiled_block is False  # later calls go straight to the eager block


def test_the_iteration_budget_ignores_padding():
    # Padding enters the cost tensor as zeros: costs far from 0 must not have their spread (and so the
    # budget, 25 x spread / eps) widened by them.
    from pipeline.transport.checks import check_problem
    from pipeline.transport.solver import _cost_spread

    cost = -1.0 + 0.1 * torch.rand(2, 5, 7, dtype=torch.float64)
    rows = torch.ones(2, 5, dtype=torch.bool)
    rows[1, 4] = False
    cols = torch.ones(2, 7, dtype=torch.bool)
    args = dict(mass=0.5, epsilon=0.01, a=None, b=None, max_iter=10, tol=1e-6, check_every=5)
    real = [cost[0], cost[1, :4]]
    expected = max((c.max() - c.min()).item() for c in real)
    assert _cost_spread(check_problem(cost, rows, cols, **args)) == pytest.approx(expected) and expected < 0.1
