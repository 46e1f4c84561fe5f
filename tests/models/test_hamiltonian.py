"""Hamiltonian (symplectic) networks: gradients against finite differences (float64), exact inverse, volume and
symplectic form preserved, the Lipschitz bound's pieces, save/load, spec validation."""

import pytest
import torch
from model_checks import assert_every_parameter_gets_a_gradient, assert_save_load_identical, parameter_gradcheck
from pydantic import ValidationError
from torch.autograd.functional import jacobian

from core.spec import ModelSpec
from models import build_model
from models.hamiltonian import GradientPotential, SymplecticEulerStep, symplectic_step_lipschitz


def tiny_hamiltonian(activation="tanh", depth=3, shared=False):
    torch.manual_seed(0)
    spec = ModelSpec(family="hamiltonian", width=4, hidden=5, depth=depth, h=0.4, activation=activation,
                     shared_weights=shared, input_dim=3, output_dim=2)
    return build_model(spec).double()


def random_step(width=6, hidden=7, h=0.7, seed=0):
    torch.manual_seed(seed)
    return SymplecticEulerStep(width, hidden, h).double()


@pytest.mark.parametrize("activation", ["tanh", "softplus"])
def test_input_and_parameter_gradients_match_finite_differences(activation):
    net = tiny_hamiltonian(activation)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(net, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)

    names = [n for n, _ in net.named_parameters()]
    assert any("kinetic.scale" in n for n in names) and any("potential.weight" in n for n in names)
    assert parameter_gradcheck(net, x, names)


def test_every_parameter_trains():
    net = tiny_hamiltonian(shared=True)
    assert_every_parameter_gets_a_gradient(net, net(torch.randn(8, 3, dtype=torch.float64)).square().sum())


def test_step_order_is_p_then_q():
    step = random_step()
    x = torch.randn(5, 6, dtype=torch.float64)
    q, p = x[:, :3], x[:, 3:]
    p1 = p - step.h * step.potential(q)
    q1 = q + step.h * step.kinetic(p1)
    torch.testing.assert_close(step(x), torch.cat([q1, p1], dim=1), rtol=0, atol=0)


def test_step_and_network_body_are_exactly_invertible():
    step = random_step(h=1.5)
    x = 3 * torch.randn(64, 6, dtype=torch.float64)
    with torch.no_grad():
        assert (step.inverse(step(x)) - x).abs().max() < 1e-10
        assert (step(step.inverse(x)) - x).abs().max() < 1e-10
        net = tiny_hamiltonian(depth=6)
        z = torch.randn(16, 4, dtype=torch.float64)
        y = z
        for s in net.steps:
            y = s(y)
        for s in reversed(net.steps):
            y = s.inverse(y)
    assert (y - z).abs().max() < 1e-10


def test_step_preserves_volume_and_the_symplectic_form():
    step = random_step(width=6, h=0.9)
    d = 3
    omega = torch.zeros(6, 6, dtype=torch.float64)
    omega[:d, d:] = torch.eye(d)
    omega[d:, :d] = -torch.eye(d)
    for seed in range(3):
        torch.manual_seed(seed)
        x = 2 * torch.randn(6, dtype=torch.float64)
        jac = jacobian(lambda v: step(v[None])[0], x)
        assert abs(abs(float(torch.linalg.det(jac))) - 1) < 1e-8
        torch.testing.assert_close(jac.T @ omega @ jac, omega, rtol=0, atol=1e-10)


def test_potential_gradient_is_a_gradient_and_its_bound_holds():
    torch.manual_seed(3)
    grad_k = GradientPotential(4, 9, "tanh").double()
    p = torch.randn(4, dtype=torch.float64, requires_grad=True)
    # ∇K(p) = Aᵀdiag(u)tanh(Ap + a) is the gradient of K(p) = uᵀ log cosh(Ap + a)
    k = (grad_k.scale * torch.log(torch.cosh(grad_k.weight @ p + grad_k.bias))).sum()
    torch.testing.assert_close(torch.autograd.grad(k, p)[0], grad_k(p[None])[0], rtol=1e-12, atol=1e-12)
    crude = float(torch.linalg.matrix_norm(grad_k.weight.detach(), 2)) ** 2 * float(grad_k.scale.detach().abs().max())
    assert grad_k.lipschitz_bound() <= crude * (1 + 1e-12)
    for seed in range(5):
        torch.manual_seed(seed)
        jac = jacobian(lambda v: grad_k(v[None])[0], torch.randn(4, dtype=torch.float64))
        assert float(torch.linalg.matrix_norm(jac, 2)) <= grad_k.lipschitz_bound() * (1 + 1e-12)


def test_step_bound_is_between_its_jacobian_norm_and_the_crude_product():
    step = random_step(h=0.8)
    bound = step.lipschitz_bound()
    lk, lu = step.kinetic.lipschitz_bound(), step.potential.lipschitz_bound()
    assert bound <= (1 + step.h * lk) * (1 + step.h * lu)
    assert symplectic_step_lipschitz(0.0, 0.0, 1.0) == pytest.approx(1.0, abs=1e-15)
    torch.manual_seed(4)
    for _ in range(10):
        jac = jacobian(lambda v: step(v[None])[0], 2 * torch.randn(6, dtype=torch.float64))
        assert float(torch.linalg.matrix_norm(jac, 2)) <= bound


def test_save_load_roundtrip_gives_identical_outputs(tmp_path):
    spec = ModelSpec(family="hamiltonian", width=6, depth=3, h=0.2, input_dim=2, output_dim=3)
    assert_save_load_identical(spec, tmp_path, torch.randn(10, 2), seed=6)


@pytest.mark.parametrize("fields,message", [
    ({"width": 7}, "width must be even"),
    ({"theta": 0.9}, "theta applies to family 'implicit' only"),
    ({"spectral": {"lower": -1.0, "upper": 1.0}}, "spectral applies"),
    ({"conv": True}, "convolutional only in the image backbone: give model.stages"),
    ({"channels": 4}, "channels applies to conv models only"),
])
def test_spec_rejects_fields_the_family_does_not_use(fields, message):
    with pytest.raises(ValidationError, match=message):
        ModelSpec(family="hamiltonian", **fields)


@pytest.mark.parametrize("lip_k,lip_u,h", [(0.0, 0.0, 1.0), (1e-9, 3e-9, 0.5), (0.3, 2.0, 0.1), (5.0, 0.0, 1.0),
                                           (2.0, 7.0, 0.8), (1e4, 1e3, 1.0)])
def test_closed_form_step_bound_is_the_exact_2x2_norm(lip_k, lip_u, h):
    a, b = h * lip_k, h * lip_u
    shear = torch.tensor([[1.0 + a * b, a], [b, 1.0]], dtype=torch.float64)
    exact = float(torch.linalg.svdvals(shear)[0])
    assert symplectic_step_lipschitz(lip_k, lip_u, h) == pytest.approx(exact, rel=1e-14)
    assert symplectic_step_lipschitz(lip_k, lip_u, h) <= (1 + a) * (1 + b) * (1 + 1e-15)
