"""solve_plan and ot_loss, the interface training uses, and POT behind it as the reference."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import ot
import pytest
import torch

from pipeline.losses import cosine_cost, ot_alignment_loss
from pipeline.transport import ot_loss, partial_ot, solve_plan
from pipeline.transport.reference import pot_partial_entropic, pot_partial_exact, primal_marginal_error


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
    """The training loss's backward: d L_ot / d C is T / s with the solver's plan T held fixed (that T is the
    derivative of the optimal value is test_transport.py's envelope-theorem test). Through the cosine cost of
    g and v, padded tokens included: equal to finite differences of the fixed-plan loss, and nothing flows
    through the solver."""
    torch.manual_seed(0)
    g = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    rows = torch.tensor([[True, True, True, False], [True, True, True, True]])
    cols = torch.ones(2, 5, dtype=torch.bool)
    cost = cosine_cost(g, v)
    cost.retain_grad()
    plan = solve_plan(cost, rows, cols, mass=0.4, epsilon=0.05)
    ot_loss(cost, plan, 0.4).sum().backward()
    torch.testing.assert_close(cost.grad, plan.double() / 0.4)
    assert (cost.grad[0, 3] == 0).all()   # the padded token

    def fixed_plan_loss(g, v):
        return ot_loss(cosine_cost(g, v), plan.double(), 0.4).mean()

    assert torch.autograd.gradcheck(fixed_plan_loss, (g, v), eps=1e-6, atol=1e-7)
    loss, _ = ot_alignment_loss(g, v, rows, cols, mass=0.4, epsilon=0.05)
    grads = torch.autograd.grad(loss.mean(), (g, v))
    for got, want in zip(grads, torch.autograd.grad(fixed_plan_loss(g, v), (g, v))):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_ot_loss_ignores_non_finite_costs_on_padding():
    cost, rows, cols = padded_problem(seed=6)
    plan = partial_ot(cost, rows, cols, 0.5, 0.05).plan
    cost[1, 4:] = float("nan")
    cost = cost.requires_grad_()
    loss = ot_loss(cost, plan, 0.5)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(cost.grad).all()


def test_pot_loads_only_for_the_pot_solvers():
    """Training with the batched solver never imports POT (a second and SciPy with it); asking for a pot-*
    solver by name does. In a fresh interpreter, where nothing else has imported it yet."""
    code = (
        "import sys, torch\n"
        "import pipeline.training.engine\n"
        "from pipeline.transport import solve_plan\n"
        "cost = torch.rand(2, 3, 4)\n"
        "rows, cols = torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 4, dtype=torch.bool)\n"
        "solve_plan(cost, rows, cols, mass=0.5, epsilon=0.05)\n"
        "print('ot' in sys.modules)\n"
        "solve_plan(cost, rows, cols, mass=0.5, epsilon=0.05, solver='pot-exact')\n"
        "print('ot' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.split() == ["False", "True"], result.stderr
