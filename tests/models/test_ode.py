"""The neural ODE family (Reshniak & Webster, eq. 11): y(0) = (x, x), ẏ = γ₂σ(γ₁y + b₁), θ-steps of h = T/depth.

Gradients against finite differences (float64) for every forward × backward solver pair, θ = 0 ≡ explicit Euler of
the same ODE, the spectral-radius initialisation, a sound Lipschitz bound, save/load, spec validation."""

import itertools

import pytest
import torch
from model_checks import assert_every_parameter_gets_a_gradient, assert_save_load_identical, parameter_gradcheck
from pydantic import ValidationError
from test_lipschitz import largest_local_ratio

from core.spec import JobSpec, ModelSpec
from models import LipschitzBoundUnavailable, build_model, lipschitz_bound
from models.ode import AugmentedInput, ODEVectorField
from models.solvers import BACKWARD_SOLVERS, FORWARD_SOLVERS


def ode_spec(**fields):
    base = {"family": "ode", "hidden": 5, "depth": 2, "t_final": 0.4, "theta": 0.6, "activation": "tanh",
            "solver": {"tol": 1e-12, "max_iter": 500}, "input_dim": 2, "output_dim": 3}
    return ModelSpec(**{**base, **fields})


def tiny_ode(seed=0, **fields):
    torch.manual_seed(seed)
    return build_model(ode_spec(**fields)).double()


def test_spec_defaults_follow_the_seed():
    spec = ModelSpec(family="ode")
    assert spec.theta == 0.5 and spec.t_final == 10.0
    assert ModelSpec.model_validate_json(spec.model_dump_json()) == spec


@pytest.mark.parametrize("fields,message", [
    ({"h": 0.5}, "h does not apply to family 'ode'"),
    ({"width": 16}, "width does not apply to family 'ode'"),
    ({"spectral": {"lower": -1.0, "upper": 1.0}}, "spectral does not apply to family 'ode'"),
    ({"conv": True}, "conv applies to families"),
])
def test_spec_rejects_fields_the_ode_family_does_not_use(fields, message):
    with pytest.raises(ValidationError, match=message):
        ModelSpec(family="ode", **fields)


def test_t_final_belongs_to_the_ode_family():
    with pytest.raises(ValidationError, match="t_final applies to family 'ode' only"):
        ModelSpec(family="implicit", t_final=5.0)


def test_structure_augmented_state_and_step_size():
    net = tiny_ode(depth=4, t_final=2.0)
    assert isinstance(net.embed, AugmentedInput)
    x = torch.randn(3, 2, dtype=torch.float64)
    torch.testing.assert_close(net.embed(x), torch.cat([x, x], 1))
    assert all(step.h == pytest.approx(0.5) and step.theta == 0.6 for step in net.steps)
    assert net.steps[0].residual.gamma1.shape == (5, 4) and net.steps[0].residual.gamma2.shape == (4, 5)
    assert net.head.in_features == 4
    assert all(not step.residual.bias1.detach().any() for step in net.steps)


def test_spectral_radius_initialisation():
    torch.manual_seed(0)
    field = ODEVectorField(state=6, hidden=100)
    product = field.gamma2.double() @ field.gamma1.double()
    assert float(torch.linalg.eigvals(product.detach()).abs().max()) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("forward,backward", list(itertools.product(sorted(FORWARD_SOLVERS), sorted(BACKWARD_SOLVERS))))
def test_input_and_parameter_gradients_match_finite_differences(forward, backward):
    # Reshniak & Webster's Example 1 sizes, smaller: x ∈ ℝ¹, state (x, x) ∈ ℝ², 3 hidden units; the steps' parameters
    net = tiny_ode(input_dim=1, hidden=3, output_dim=2,
                   solver={"forward": forward, "backward": backward, "tol": 1e-12, "max_iter": 500})
    torch.manual_seed(1)
    x = torch.randn(3, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(net, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)

    assert parameter_gradcheck(net, x, [n for n, _ in net.named_parameters() if n.startswith("steps.")])


def test_every_parameter_trains():
    net = tiny_ode(shared_weights=False)
    assert_every_parameter_gets_a_gradient(net, net(torch.randn(6, 2, dtype=torch.float64)).square().sum())


def test_theta_zero_is_explicit_euler_of_the_same_ode_and_runs_no_solver():
    net = tiny_ode(theta=0.0, depth=5, t_final=2.5, activation="relu")
    x = torch.randn(7, 2, dtype=torch.float64)
    y = torch.cat([x, x], 1)
    h = 2.5 / 5
    for step in net.steps:  # y ← y + h·γ₂ relu(γ₁y + b₁), written out
        f = step.residual
        y = y + h * (torch.relu(y @ f.gamma1.T + f.bias1) @ f.gamma2.T)
    expected = y @ net.head.weight.T + net.head.bias
    torch.testing.assert_close(net(x), expected, rtol=1e-12, atol=1e-12)
    assert all(step.stats.forward_iterations == 0 for step in net.steps)


def test_shared_weights_use_one_field():
    net = tiny_ode(shared_weights=True, depth=3)
    assert net.steps[0].residual is net.steps[1].residual is net.steps[2].residual
    assert sum(p.numel() for p in net.parameters()) == 5 * 4 + 5 + 4 * 5 + 3 * 4 + 3


def test_bound_is_the_theta_method_product_and_never_exceeded():
    net = tiny_ode(depth=2, t_final=0.4, theta=0.5, solver={"tol": 1e-10, "max_iter": 200}).eval()
    bound = lipschitz_bound(net)
    expected = 2**0.5 * float(torch.linalg.matrix_norm(net.head.weight.detach(), 2))
    for step in net.steps:
        f = step.residual
        ell = float(torch.linalg.matrix_norm(f.gamma2.detach(), 2) * torch.linalg.matrix_norm(f.gamma1.detach(), 2))
        expected *= (1 + 0.5 * 0.2 * ell) / (1 - 0.5 * 0.2 * ell)
    assert bound == pytest.approx(expected, rel=1e-12)
    x, x2 = torch.randn(2000, 2, dtype=torch.float64), torch.randn(2000, 2, dtype=torch.float64)
    with torch.no_grad():
        random_ratio = float(((net(x) - net(x2)).norm(dim=1) / (x - x2).norm(dim=1)).max())
    searched = largest_local_ratio(net, steps=40)
    assert random_ratio <= bound and searched <= bound * (1 + 1e-9)
    assert searched > 1e-3 * bound


def test_bound_refuses_when_theta_h_lip_is_at_least_one():
    net = tiny_ode(depth=1, t_final=10.0, theta=1.0)
    with pytest.raises(LipschitzBoundUnavailable, match="θ·h·Lip"):
        lipschitz_bound(net)


@pytest.mark.parametrize("shared", [False, True])
def test_save_load_roundtrip_gives_identical_outputs(tmp_path, shared):
    spec = ode_spec(shared_weights=shared, depth=3, activation="relu", solver={})
    assert_save_load_identical(spec, tmp_path, torch.randn(10, 2), seed=6)


def test_job_spec_with_ode_and_regularizers_validates():
    spec = JobSpec.model_validate({
        "name": "ode", "dataset": {"name": "spirals"}, "model": {"family": "ode", "depth": 10},
        "train": {"regularizers": {"fixed_point": 0.01, "divergence": {"weight": 0.1, "power": 2.0}}},
    })
    regs = spec.train.regularizers
    assert regs.fixed_point.weight == 0.01 and regs.fixed_point.iterations == 10 and regs.divergence.power == 2.0
    assert JobSpec.model_validate(spec.model_dump(mode="json")) == spec
