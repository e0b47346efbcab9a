"""solve_plan and ot_loss, the interface training uses, and POT behind it as the reference."""
import numpy as np
import ot
import pytest
import torch

from pipeline.ot_reference import pot_partial_entropic, pot_partial_exact, primal_marginal_error
from pipeline.ot_solvers import ot_loss, solve_plan
from pipeline.transport import partial_ot


def padded_problem(seed=0, low=0.0, high=1.0):
    generator = torch.Generator().manual_seed(seed)
    cost = low + (high - low) * torch.rand(3, 6, 9, generator=generator, dtype=torch.float64)
    rows, cols = torch.ones(3, 6, dtype=torch.bool), torch.ones(3, 9, dtype=torch.bool)
    rows[1, 4:] = False
    cols[2, 5:] = False
    return cost, rows, cols


@pytest.mark.parametrize("solver", ["sinkhorn", "pot-exact", "pot-entropic"])
def test_solve_plan_returns_a_detached_float32_plan(solver):
    cost, rows, cols = padded_problem()
    cost = cost.requires_grad_()
    plan = solve_plan(cost, rows, cols, mass=0.5, epsilon=0.05, solver=solver)
    assert plan.dtype == torch.float32 and plan.device == cost.device and not plan.requires_grad
    assert plan.shape == cost.shape and (plan[1, 4:] == 0).all() and (plan[2, :, 5:] == 0).all()
    torch.testing.assert_close(plan.sum(dim=(1, 2)), torch.full((3,), 0.5), rtol=0, atol=1e-5)


def test_fast_solver_agrees_with_the_entropic_reference_on_padded_batches():
    cost, rows, cols = padded_problem(seed=1)
    fast = partial_ot(cost, rows, cols, 0.5, 0.05, tol=1e-11, max_iter=5000)
    reference = pot_partial_entropic(cost, rows, cols, 0.5, 0.05, tol=1e-14, max_iter=5000)
    torch.testing.assert_close(fast.plan, reference.plan, rtol=0, atol=1e-9)
    torch.testing.assert_close(fast.cost, reference.cost, rtol=1e-8, atol=0)
    assert (reference.iterations > 1).all()


def test_exact_reference_matches_pot_on_each_cut_out_pair():
    cost, rows, cols = padded_problem(seed=2)
    result = pot_partial_exact(cost, rows, cols, 0.7)
    n, m = int(rows[1].sum()), int(cols[1].sum())
    alone = ot.partial.partial_wasserstein(np.full(n, 1 / n), np.full(m, 1 / m), cost[1, :n, :m].numpy(), m=0.7)
    np.testing.assert_allclose(result.plan[1, :n, :m].numpy(), alone, atol=1e-12)
    assert (result.marginal_error < 1e-12).all() and (result.iterations == 0).all()


def test_entropic_reference_falls_back_to_the_log_domain_where_pot_underflows():
    cost, rows, cols = padded_problem(seed=3, low=5.0, high=7.0)
    with pytest.warns(RuntimeWarning, match=r"NaN/inf on pair\(s\) \[0, 1, 2\]"):
        result = pot_partial_entropic(cost, rows, cols, 0.5, 2e-3, tol=1e-9, max_iter=3000)
    assert torch.isfinite(result.plan).all()
    torch.testing.assert_close(result.plan.sum(dim=(1, 2)), torch.full((3,), 0.5, dtype=torch.float64))


def test_primal_marginal_error_counts_every_violation():
    plan = torch.tensor([[[0.3, 0.0], [0.0, 0.1]]], dtype=torch.float64)
    a = b = torch.tensor([[0.25, 0.25]], dtype=torch.float64)
    # Row 0 and column 0 are 0.05 over; the total is 0.4 against 0.5.
    assert primal_marginal_error(plan, a, b, torch.tensor([0.5], dtype=torch.float64)).item() == pytest.approx(0.2)


def test_ot_loss_gradient_is_the_fixed_plan_over_s():
    cost, rows, cols = padded_problem(seed=4)
    plan = partial_ot(cost, rows, cols, 0.4, 0.05, tol=1e-10).plan
    cost = cost.clone().requires_grad_()
    # Finite differences of the loss with the plan held fixed, in float64.
    assert torch.autograd.gradcheck(lambda c: ot_loss(c, plan, 0.4), (cost,), eps=1e-6, atol=1e-9)
    ot_loss(cost, plan, 0.4).sum().backward()
    torch.testing.assert_close(cost.grad, plan / 0.4)


def test_ot_loss_through_solve_plan_reaches_the_cost_only():
    cost, rows, cols = padded_problem(seed=5)
    features = cost.float().clone().requires_grad_()
    cost_of_features = features * 2.0
    plan = solve_plan(cost_of_features, rows, cols, mass=0.5, epsilon=0.05)
    loss = ot_loss(cost_of_features, plan, 0.5)
    torch.testing.assert_close(loss, (plan * cost_of_features).sum(dim=(1, 2)).detach() / 0.5)
    loss.sum().backward()
    torch.testing.assert_close(features.grad, 2.0 * plan / 0.5)


def test_ot_loss_ignores_non_finite_costs_on_padding():
    cost, rows, cols = padded_problem(seed=6)
    plan = partial_ot(cost, rows, cols, 0.5, 0.05).plan
    cost[1, 4:] = float("nan")
    cost = cost.requires_grad_()
    loss = ot_loss(cost, plan, 0.5)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(cost.grad).all()
