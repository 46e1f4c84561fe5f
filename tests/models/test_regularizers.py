"""Regularizers of ``models.regularizers``: each value against a direct computation (explicit Jacobians, float64) on
tiny models, exact traces when Hutchinson's probes are the scaled basis, gradients reaching the parameters (and
matching finite differences)."""

import math

import pytest
import torch
from torch.autograd.functional import jacobian
from torch.func import functional_call

from core.spec import ModelSpec
from models import build_model
from models.regularizers import (
    REGULARIZERS,
    divergence_penalty,
    field_norm_penalty,
    fixed_point_penalty,
    normal_penalty,
    regularization_terms,
    stability_trace_penalty,
    total_variation_penalty,
)

SOLVER = {"tol": 1e-13, "max_iter": 300}
FAMILIES = {
    "explicit": {"family": "explicit", "width": 3, "hidden": 4, "h": 0.3},
    "implicit": {"family": "implicit", "width": 3, "hidden": 4, "h": 0.3, "theta": 1.0, "solver": SOLVER},
    "ode": {"family": "ode", "hidden": 3, "t_final": 0.6, "theta": 0.5, "solver": SOLVER},
}


def tiny(family, depth=3, seed=0, **fields):
    torch.manual_seed(seed)
    base = {"depth": depth, "input_dim": 2, "output_dim": 2, "activation": "tanh"}
    spec = ModelSpec(**{**base, **FAMILIES[family], **fields})
    return build_model(spec).double()


def forward(net, n=4, seed=1):
    torch.manual_seed(seed)
    x = torch.randn(n, 2, dtype=torch.float64)
    return net(x, return_states=True)[1]


def theta_of(step):
    return getattr(step, "theta", 0.0)


def field_jacobians(step, points):
    """∂F/∂y at each row of ``points``: (N, d, d)."""
    return torch.stack([jacobian(lambda v: step.residual(v[None])[0], p.detach()) for p in points])


def basis_probes(states, scale=True):
    """Probes z_s = √d·e_s (s = 1…d), one set per step: (1/d)Σ_s z_sᵀAz_s = tr A exactly."""
    d = states[0].shape[1]
    eye = torch.eye(d, dtype=torch.float64) * (math.sqrt(d) if scale else 1.0)
    probes = eye[:, None, :].expand(d, states[0].shape[0], d)
    return [probes for _ in states[1:]]


# ------------------------------------------------------------------------------------------- values
@pytest.mark.parametrize("family", ["implicit", "ode"])
@pytest.mark.parametrize("power", [0.5, 2.0])
def test_fixed_point_value(family, power):
    net = tiny(family)
    states = forward(net)
    K = 4
    expected = 0.0
    for t, step in enumerate(net.steps, start=1):
        x, f, h, theta = states[t - 1], step.residual, step.h, theta_of(step)

        def phi(z, x=x, f=f, h=h, theta=theta):
            return x + h * ((1 - theta) * f(x) + theta * f(z))

        iterates = [x]
        for _ in range(K):
            iterates.append(phi(iterates[-1]))
        for k in range(1, K + 1):
            r = iterates[k] - phi(iterates[k])  # r(y^k) = y^k − Φ(y^k), Reshniak & Webster, eq. 9
            expected += (k / K) ** power * float(r.detach().norm(dim=1).mean())
    value = fixed_point_penalty(net, states, power=power, iterations=K)
    assert float(value.detach()) == pytest.approx(expected, rel=1e-12)
    assert float(fixed_point_penalty(tiny("explicit"), forward(tiny("explicit")))) == 0.0  # θ = 0: r(y¹) = 0


@pytest.mark.parametrize("family", ["explicit", "ode"])
def test_divergence_value_and_exact_trace(family):
    net = tiny(family)
    states = forward(net)
    T, d = len(net.steps), states[0].shape[1]
    torch.manual_seed(2)
    noise = [torch.randn(2, *states[0].shape, dtype=torch.float64) for _ in net.steps]
    expected = trace = 0.0
    for t, step in enumerate(net.steps, start=1):
        J = field_jacobians(step, states[t])
        quad = torch.einsum("sni,nij,snj->sn", noise[t - 1], J, noise[t - 1]).mean()
        expected += (t / T) ** 1.5 * float(quad.detach()) / d
        trace += (t / T) ** 1.5 * float(J.detach().diagonal(dim1=1, dim2=2).sum(1).mean()) / d
    value = divergence_penalty(net, states, power=1.5, samples=2, noise=noise)
    assert float(value.detach()) == pytest.approx(expected / T, rel=1e-12)
    exact = divergence_penalty(net, states, power=1.5, samples=d, noise=basis_probes(states))
    assert float(exact.detach()) == pytest.approx(trace / T, rel=1e-12)


def test_total_variation_value_and_zero_for_shared_weights():
    net = tiny("ode", depth=4)
    expected = 0.0
    for a, b in zip(net.steps, net.steps[1:], strict=False):
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            expected += float((pb - pa).detach().square().sum())
    assert float(total_variation_penalty(net).detach()) == pytest.approx(expected / 4, rel=1e-12)
    assert float(total_variation_penalty(tiny("ode", shared_weights=True)).detach()) == 0.0


@pytest.mark.parametrize("family", ["explicit", "implicit", "ode"])
def test_field_norm_value(family):
    net = tiny(family)
    states = forward(net)
    expected = sum(float(step.residual(states[t - 1]).detach().square().sum(1).mean()) for t, step in
                   enumerate(net.steps, start=1))
    assert float(field_norm_penalty(net, states).detach()) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("family", ["explicit", "implicit", "ode"])
def test_stability_trace_value_and_exact_frobenius_norm(family):
    net = tiny(family)
    states = forward(net)
    d = states[0].shape[1]
    torch.manual_seed(3)
    noise = [torch.randn(3, *states[0].shape, dtype=torch.float64) for _ in net.steps]
    expected = frobenius = 0.0
    eye = torch.eye(d, dtype=torch.float64)
    for t, step in enumerate(net.steps, start=1):
        h, theta = step.h, theta_of(step)
        jx, jy = field_jacobians(step, states[t - 1]), field_jacobians(step, states[t])
        R = torch.linalg.solve(eye - h * theta * jy, eye + h * (1 - theta) * jx)  # the step's Jacobian ∂y/∂x
        if family == "ode":  # check R against autograd through the solved step itself
            x0 = states[t - 1][0].detach()
            torch.testing.assert_close(jacobian(lambda v, step=step: step(v[None])[0], x0), R[0], rtol=1e-8,
                                       atol=1e-8)
        rtv = torch.einsum("nji,snj->sni", R, noise[t - 1])  # Rᵀv
        expected += float(rtv.detach().square().sum(-1).mean())
        frobenius += float(R.detach().square().sum((1, 2)).mean())
    kwargs = {"iterations": 200, "tol": 1e-15}
    value = stability_trace_penalty(net, states, samples=3, noise=noise, **kwargs)
    assert float(value.detach()) == pytest.approx(expected, rel=1e-10)
    exact = stability_trace_penalty(net, states, samples=d, noise=basis_probes(states), **kwargs)
    assert float(exact.detach()) == pytest.approx(frobenius, rel=1e-10)


@pytest.mark.parametrize("family", ["explicit", "ode"])
def test_normal_value(family):
    net = tiny(family)
    states = forward(net)
    torch.manual_seed(4)
    eps = [1e-2 * torch.randn(*states[0].shape, dtype=torch.float64) for _ in net.steps]
    alpha, expected = 0.2, 0.0
    for t, step in enumerate(net.steps, start=1):
        x, f, h, theta = states[t - 1].detach(), step.residual, step.h, theta_of(step)
        p = x + eps[t - 1]
        J = field_jacobians(step, p)
        n = 2 * torch.einsum("nji,nj->ni", J, f(p))  # ∇‖F(p)‖² = 2 J(p)ᵀ F(p)
        n_hat = n / n.norm(dim=1, keepdim=True)
        back = alpha * n_hat + h * (1 - theta) * f(x + alpha * n_hat) + h * theta * f(x)
        expected += float(back.detach().square().sum(1).mean())
    value = normal_penalty(net, states, alpha=alpha, perturbation=eps)
    assert float(value.detach()) == pytest.approx(expected, rel=1e-10)


# ------------------------------------------------------------------------------------------- gradients
# R_fp needs θ-steps (it vanishes identically for θ = 0): the explicit family is not a case for it
CASES = [(name, family) for name in sorted(REGULARIZERS) for family in ("explicit", "ode")
         if (name, family) != ("fixed_point", "explicit")]  # fmt: skip


@pytest.mark.parametrize(("name", "family"), CASES)
def test_gradient_reaches_every_step_parameter(name, family):
    net = tiny(family)
    if family == "ode":  # b₁ = 0 in every layer at initialisation (Reshniak & Webster): give TV a difference to see
        with torch.no_grad():
            for step in net.steps:
                step.residual.bias1.normal_()
    states = forward(net)
    value = regularization_terms(net, states, {name: {}}, torch.Generator().manual_seed(0))[name]
    value.backward()
    for pname, p in net.named_parameters():
        if pname.startswith("steps.") and not pname.endswith("residual.lin2.bias"):  # b₂ cancels in ∂F, ∇·F, TV…
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, (name, pname)


@pytest.mark.parametrize("name", ["fixed_point", "divergence", "total_variation", "field_norm", "stability_trace"])
def test_parameter_gradient_matches_finite_differences(name):
    """Through the implicit steps (ImplicitAdjoint) and the regularizer's own graph, in float64."""
    net = tiny("ode", depth=2, input_dim=1, hidden=2)
    torch.manual_seed(5)
    x = torch.randn(3, 1, dtype=torch.float64)
    names = [n for n, _ in net.named_parameters() if n.startswith("steps.")]
    leaves = tuple(net.get_parameter(n).detach().clone().requires_grad_(True) for n in names)
    noise = [torch.randn(1, 3, 2, dtype=torch.float64) for _ in range(2)]
    fixed_states = net(x, return_states=True)[1]
    options = {"fixed_point": {"iterations": 3}, "divergence": {"noise": noise}, "total_variation": {},
               "field_norm": {}, "stability_trace": {"noise": noise, "iterations": 300, "tol": 1e-15}}[name]

    class Regularized(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, inputs):
            states = self.net(inputs, return_states=True)[1]
            if name == "fixed_point":  # R_fp treats each step's input as data: a function of that step's γ_t only
                states = [s.detach() for s in fixed_states]
            return REGULARIZERS[name](self.net, states, **options)

    wrapped = Regularized()

    def value(*ps):
        return functional_call(wrapped, {f"net.{n}": p for n, p in zip(names, ps, strict=True)}, (x,), strict=False)

    assert torch.autograd.gradcheck(value, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_randomised_regularizers_are_seeded():
    net = tiny("ode")
    states = forward(net)
    options = {"divergence": {}, "stability_trace": {}, "normal": {}}
    a = regularization_terms(net, states, options, torch.Generator().manual_seed(0))
    b = regularization_terms(net, states, options, torch.Generator().manual_seed(0))
    assert all(float(a[k].detach()) == float(b[k].detach()) for k in options)


def test_families_without_residual_functions_are_refused():
    torch.manual_seed(0)
    net = build_model(ModelSpec(family="hamiltonian", width=4, depth=2, input_dim=2, output_dim=2))
    states = net(torch.randn(3, 2), return_states=True)[1]
    with pytest.raises(ValueError, match="no residual functions"):
        field_norm_penalty(net, states)
    assert float(total_variation_penalty(net).detach()) > 0  # TV needs only per-step parameters
    with pytest.raises(KeyError, match="unknown regularizer"):
        regularization_terms(net, states, {"adjoint": {}})
