"""The θ-method layer: forward fixed point, implicit backward against finite differences (float64), θ=0 ≡ explicit."""

import itertools
import typing

import pytest
import torch
from model_checks import assert_every_parameter_gets_a_gradient, assert_save_load_identical, parameter_gradcheck

from core.spec import AUTO_SOLVER, BackwardSolverName, ForwardSolverName, ModelSpec
from models import build_model
from models.residual import ResidualFunction
from models.solvers import BACKWARD_SOLVERS, FORWARD_SOLVERS
from models.steps import ExplicitStep, ThetaStep

FORWARD = sorted(FORWARD_SOLVERS)
BACKWARD = sorted(BACKWARD_SOLVERS)


def tiny_implicit(theta=0.7, forward="anderson", backward="gmres", tol=1e-12, spectral=None, depth=2):
    torch.manual_seed(0)
    spec = ModelSpec(
        family="implicit",
        width=4,
        hidden=5,
        depth=depth,
        h=0.5,
        theta=theta,
        spectral=spectral,
        solver={"forward": forward, "backward": backward, "tol": tol, "max_iter": 500},
        input_dim=3,
        output_dim=2,
    )
    return build_model(spec).double()


def test_spec_solver_names_match_registries():
    """Every registered solver, and "auto" (a choice between registered ones, models.solvers.auto)."""
    assert set(typing.get_args(ForwardSolverName)) == set(FORWARD_SOLVERS) | {AUTO_SOLVER}
    assert set(typing.get_args(BackwardSolverName)) == set(BACKWARD_SOLVERS) | {AUTO_SOLVER}


@pytest.mark.parametrize("forward,backward", list(itertools.product(FORWARD, BACKWARD)))
def test_input_and_parameter_gradients_match_finite_differences(forward, backward):
    net = tiny_implicit(forward=forward, backward=backward)
    x = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(net, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)

    assert parameter_gradcheck(net, x)


def test_parameter_gradients_with_spectral_normalisation_are_nonzero_and_correct():
    net = tiny_implicit(spectral={"lower": -1.0, "upper": 0.5})
    net.eval()  # exact norms: a deterministic function of the raw weights, so finite differences apply
    x = torch.randn(4, 3, dtype=torch.float64)
    assert any("original" in n for n, _ in net.named_parameters())  # the parametrised raw weights themselves
    assert parameter_gradcheck(net, x)
    net.train()
    assert_every_parameter_gets_a_gradient(net, net(x).sum())


def test_backward_matches_unrolled_autograd_through_long_fixed_point_iteration():
    torch.manual_seed(1)
    f = ResidualFunction(4, 6).double()
    step = ThetaStep(f, h=0.5, theta=1.0)
    step.solver.tol = step.solver.backward_tol = 1e-13
    step.solver.max_iter = step.solver.backward_max_iter = 500
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = step(x)
    gx, *gp = torch.autograd.grad(y.square().sum(), [x, *f.parameters()])

    z = x
    for _ in range(300):  # plain autograd through many Picard iterations
        z = x + 0.5 * f(z)
    ux, *up = torch.autograd.grad(z.square().sum(), [x, *f.parameters()])
    torch.testing.assert_close(y, z, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gx, ux, rtol=1e-8, atol=1e-8)
    for a, b in zip(gp, up, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("forward", FORWARD)
def test_forward_reaches_fixed_point_below_tolerance(forward):
    torch.manual_seed(2)
    f = ResidualFunction(8, 8)
    step = ThetaStep(f, h=0.5, theta=0.75)
    step.solver.forward, step.solver.tol = forward, 1e-5
    x = torch.randn(64, 8)
    with torch.no_grad():
        y = step(x)
        residual = y - x - 0.5 * (0.25 * f(x) + 0.75 * f(y))
    assert step.stats.forward_residual < 1e-5
    assert float(residual.norm() / y.norm()) < 1e-4


def test_all_forward_solvers_reach_the_same_fixed_point():
    torch.manual_seed(3)
    f = ResidualFunction(6, 6).double()
    x = torch.randn(16, 6, dtype=torch.float64)
    outs = []
    for forward in FORWARD:
        step = ThetaStep(f, h=0.5, theta=1.0)
        step.solver.forward, step.solver.tol, step.solver.max_iter = forward, 1e-12, 500
        with torch.no_grad():
            outs.append(step(x))
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], rtol=1e-9, atol=1e-9)


def test_theta_zero_equals_explicit_step_and_runs_no_solver():
    torch.manual_seed(4)
    f = ResidualFunction(5, 7)
    x = torch.randn(8, 5, requires_grad=True)
    implicit, explicit = ThetaStep(f, h=0.3, theta=0.0), ExplicitStep(f, h=0.3)
    y0, y1 = implicit(x), explicit(x)
    torch.testing.assert_close(y0, y1, rtol=0, atol=0)
    assert implicit.stats.forward_iterations == 0
    g0 = torch.autograd.grad(y0.sum(), x)[0]
    g1 = torch.autograd.grad(y1.sum(), x)[0]
    torch.testing.assert_close(g0, g1, rtol=0, atol=0)


def test_nonconvergence_is_surfaced_not_silent():
    torch.manual_seed(5)
    f = ResidualFunction(4, 4)
    with torch.no_grad():
        f.lin1.weight.mul_(20)
    step = ThetaStep(f, h=1.0, theta=1.0)
    step.solver.forward, step.solver.max_iter = "fixed_point", 3
    with pytest.warns(RuntimeWarning, match="forward solve stopped"):
        step(torch.randn(4, 4))
    assert step.stats.failures


@pytest.mark.parametrize(
    "family,spectral,shared",
    [("explicit", None, False), ("implicit", {"lower": -1.0, "upper": 1.0}, False), ("implicit", None, True)],
)
def test_save_load_roundtrip_gives_identical_outputs(tmp_path, family, spectral, shared):
    spec = ModelSpec(
        family=family,
        shared_weights=shared,
        width=6,
        depth=3,
        h=0.2,
        theta=0.5 if family == "implicit" else 0.0,
        spectral=spectral,
        input_dim=2,
        output_dim=3,
    )
    assert_save_load_identical(spec, tmp_path, torch.randn(10, 2), seed=6)
