"""Every kind of bad input to the OT solvers raises a clear ConfigError (also a ValueError)."""
import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.transport import ot_loss, partial_ot, solve_plan
from pipeline.transport.reference import pot_partial_entropic, pot_partial_exact

SOLVERS = [partial_ot, pot_partial_exact, pot_partial_entropic]


def problem(batch=2, n=4, m=5):
    cost = torch.rand(batch, n, m, generator=torch.Generator().manual_seed(0))
    return cost, torch.ones(batch, n, dtype=torch.bool), torch.ones(batch, m, dtype=torch.bool)


def expect_error(solver, match, cost, rows, cols, mass=0.5, eps=0.05, **options):
    with pytest.raises(ConfigError, match=match) as caught:
        solver(cost, rows, cols, mass, eps, **options)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_cost(solver, bad):
    cost, rows, cols = problem()
    cost[1, 2, 3] = bad
    expect_error(solver, r"NaN or infinite values .* 1 example\(s\) \(first: 1\)", cost, rows, cols)


def test_non_finite_cost_on_padding_is_allowed():
    cost, rows, cols = problem()
    cost[1, 3, :] = float("nan")
    rows[1, 3] = False
    assert torch.isfinite(partial_ot(cost, rows, cols, 0.5, 0.05).plan).all()


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("which", ["rows", "cols"])
def test_empty_example(solver, which):
    cost, rows, cols = problem()
    (rows if which == "rows" else cols)[1] = False
    expect_error(solver, r"empty example.*first: 1", cost, rows, cols)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("mass,why", [(0.0, "is not positive"), (-0.2, "is not positive"),
                                      (1.5, "exceeds the available mass"), (float("nan"), "is not a number")])
def test_mass_fraction_outside_zero_one(solver, mass, why):
    expect_error(solver, f"s=.* {why}", *problem(), mass=mass)


def test_one_bad_mass_among_per_example_fractions():
    expect_error(partial_ot, "exceeds the available mass", *problem(), mass=torch.tensor([0.5, 1.01]))
    expect_error(partial_ot, "one value per example", *problem(), mass=torch.tensor([0.5, 0.5, 0.5]))


@pytest.mark.parametrize("solver", [partial_ot, pot_partial_entropic])
@pytest.mark.parametrize("eps", [0.0, -0.1, float("nan"), float("inf")])
def test_epsilon_not_positive(solver, eps):
    expect_error(solver, "epsilon must be a finite number > 0", *problem(), eps=eps)


@pytest.mark.parametrize("solver", SOLVERS)
def test_shape_mismatches(solver):
    cost, rows, cols = problem()
    expect_error(solver, r"row_mask must be a bool tensor of shape \(2, 4\)", cost, rows[:, :3], cols)
    expect_error(solver, r"col_mask must be a bool tensor of shape \(2, 5\)", cost, rows, cols[:1])
    expect_error(solver, "row_mask must be a bool tensor", cost, rows.float(), cols)
    expect_error(solver, r"cost must be a floating \(B, n, m\) tensor", cost[0], rows, cols)
    expect_error(solver, r"cost must be a floating \(B, n, m\) tensor", cost.long(), rows, cols)
    expect_error(solver, r"a must be a tensor of shape \(2, 4\)", cost, rows, cols, a=torch.ones(2, 5))


def test_bad_marginals_and_settings():
    cost, rows, cols = problem()
    expect_error(partial_ot, "finite and >= 0", cost, rows, cols, a=-torch.ones(2, 4))
    expect_error(partial_ot, "positive total marginal mass", cost, rows, cols, b=torch.zeros(2, 5))
    expect_error(partial_ot, "max_iter must be an int >= 1", cost, rows, cols, max_iter=0)
    expect_error(partial_ot, "check_every must be an int >= 1", cost, rows, cols, check_every=0)
    expect_error(partial_ot, "tol must be a number >= 0", cost, rows, cols, tol=-1.0)
    expect_error(partial_ot, r"eps_scaling_factor must be in \(0, 1\)", cost, rows, cols,
                 eps_scaling=True, eps_scaling_factor=1.5)
    for bad in (-1.0, float("inf"), float("nan"), "25"):
        expect_error(partial_ot, "iters_per_spread must be a finite number >= 0", cost, rows, cols, iters_per_spread=bad)


def test_interface_errors():
    cost, rows, cols = problem()
    with pytest.raises(ConfigError, match="OT solver must be one of"):
        solve_plan(cost, rows, cols, mass=0.5, epsilon=0.05, solver="emd")
    with pytest.raises(ConfigError, match="mass fraction s must be in"):
        ot_loss(cost, torch.zeros_like(cost), 0.0)
    with pytest.raises(ValueError, match="method must be"):
        pot_partial_entropic(cost, rows, cols, 0.5, 0.05, method="log")
