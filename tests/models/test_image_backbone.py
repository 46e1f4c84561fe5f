"""The convolutional image backbone's parts (models.image, models.conv_term, models.hamiltonian's conv potential):
the closed-form implicit conv term against autograd, the implicit conv layer's gradients against finite differences
(float64), the exact norms of normalisation, pooling and downsampling, the sound conv bound on non-square images,
and each family's whole-network bound against a strong search for the largest input-Jacobian norm."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian

from models.conv import ConvResidualFunction, certified_conv_norm, conv_norm_bound
from models.conv_term import ConvTerm
from models.hamiltonian import ConvGradientPotential, SymplecticEulerStep
from models.image import ChannelNormalization, Downsample, GlobalPool, ImageEmbedding
from models.residual import ACTIVATIONS
from models.steps import AutogradTerm, SolverConfig, ThetaStep, implicit_term

COEFF = 0.7


def conv_matrix(kernel: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The zero-padded convolution's matrix on C×H×W images, from autograd's Jacobian (an independent construction)."""
    c_in, k = kernel.shape[1], kernel.shape[-1]

    def conv(v: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(v.reshape(1, c_in, *size), kernel, padding=k // 2).flatten()

    return jacobian(conv, torch.zeros(c_in * size[0] * size[1], dtype=kernel.dtype))


def operator_norm(fn, shape) -> float:
    """‖J‖₂ of a linear map ``fn`` on flat inputs of ``shape``, from its Jacobian (an independent construction)."""
    matrix = jacobian(fn, torch.zeros(shape, dtype=torch.float64))
    return float(torch.linalg.matrix_norm(matrix.reshape(-1, matrix[0].numel() if matrix.dim() > 1 else 1), 2))


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_conv_term_matches_autograd_of_coeff_times_f(activation):
    torch.manual_seed(0)
    f = ConvResidualFunction(2, 3, (5, 6), 3, activation).double()
    params = f.weights()
    y = (3 * torch.randn(4, 2 * 30, dtype=torch.float64)).requires_grad_(True)
    base, v, g = (torch.randn(4, 60, dtype=torch.float64) for _ in range(3))
    term = implicit_term(f, params, COEFF, y)
    assert isinstance(term, ConvTerm)
    frozen = term.with_tensors({k: t.detach() for k, t in term.tensors().items()})
    fy = COEFF * f.apply(params, y)
    with torch.no_grad():
        torch.testing.assert_close(frozen.fixed_point_map(base)(y), base + fy, rtol=1e-12, atol=1e-12)
        linear = frozen.linearize(y.detach())
        jtv = linear.vjp(v)
    torch.testing.assert_close(jtv, torch.autograd.grad(fy, y, v, retain_graph=True)[0], rtol=1e-12, atol=1e-12)
    names = list(frozen.tensors())
    folded = linear.param_vjp(g, names)
    leaves = list(f.parameters())
    via_fold = torch.autograd.grad([term.tensors()[n] for n in names], leaves, [folded[n] for n in names])
    direct = torch.autograd.grad(fy, leaves, g)
    for a, b in zip(via_fold, direct, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    bound = frozen.lipschitz_bound()  # what the "auto" solver choice reads: sound for T = coeff·F
    for z in y.detach():
        jac = jacobian(lambda v: COEFF * f.apply(params, v[None])[0], z)
        assert float(torch.linalg.matrix_norm(jac, 2)) <= bound


def test_a_conv_activation_without_closed_form_falls_back_to_autograd():
    f = ConvResidualFunction(2, 2, 4).double()
    f.activation = torch.nn.ELU()
    assert isinstance(implicit_term(f, f.weights(), COEFF, torch.zeros(1, 32)), AutogradTerm)


@pytest.mark.parametrize(("forward", "backward"), [("anderson", "gmres"), ("fixed_point", "neumann")])
def test_implicit_conv_step_gradients_match_finite_differences(forward, backward):
    torch.manual_seed(1)
    f = ConvResidualFunction(2, 3, (4, 5), 3, "tanh").double()
    cfg = SolverConfig(forward, backward, 1e-13, 500, 1e-13, 500)
    step = ThetaStep(f, h=0.4, theta=0.5, solver=cfg)
    x = torch.randn(2, 40, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(step, (x,), eps=1e-6, atol=1e-7, rtol=1e-6)
    names = [n for n, _ in f.named_parameters()]
    leaves = tuple(p.detach().clone().requires_grad_(True) for p in f.parameters())

    def by_params(*ps):
        return torch.func.functional_call(
            step, {f"residual.{n}": p for n, p in zip(names, ps, strict=True)}, (x.detach(),)
        )

    assert torch.autograd.gradcheck(by_params, leaves, eps=1e-6, atol=1e-7, rtol=1e-6)
    assert not step.stats.failures


def test_normalization_and_pooling_norms_are_exact():
    norm = ChannelNormalization([0.2, 0.5, 0.1], [0.3, 0.15, 0.6]).double()
    assert norm.lipschitz_bound() == pytest.approx(1 / 0.15, rel=1e-7)  # the float32 buffer of 0.15
    measured = operator_norm(
        lambda v: norm(v.reshape(1, 3, 4, 4)).flatten() - norm(torch.zeros(1, 3, 4, 4, dtype=torch.float64)).flatten(),
        48,
    )
    assert measured == pytest.approx(norm.lipschitz_bound(), rel=1e-12)
    for scale in (None, 0.25):
        pool = GlobalPool(3, (4, 6), scale)
        assert operator_norm(lambda v, p=pool: p(v.unsqueeze(0)).squeeze(0), 72) == pytest.approx(
            pool.lipschitz_bound(), rel=1e-12
        )
    assert GlobalPool(3, (4, 6)).lipschitz_bound() == pytest.approx(1 / 24**0.5)  # average pooling: 1/√(HW)


@pytest.mark.parametrize(("c_out", "kind"), [(8, "unshuffle"), (5, "unshuffle"), (3, "none"), (2, "none")])
def test_downsample_norm_is_exact_and_unshuffle_is_an_isometry(c_out, kind):
    torch.manual_seed(2)
    down = Downsample(2, c_out, (4, 6), kind).double()
    measured = operator_norm(
        lambda v: down(v.unsqueeze(0)).squeeze(0) - down(torch.zeros(1, 48, dtype=torch.float64)).squeeze(0), 48
    )
    assert measured == pytest.approx(down.lipschitz_bound(), rel=1e-10)
    if down.conv is None:  # pixel-unshuffle alone (2 → 8 channels) or nothing: norm exactly 1, lengths kept
        x = torch.randn(5, 48, dtype=torch.float64)
        torch.testing.assert_close(down(x).norm(dim=1), x.norm(dim=1), rtol=1e-14, atol=0)
        assert down.lipschitz_bound() == 1.0
    normalized = Downsample(2, c_out, (4, 6), kind, normalized=True).double().eval()
    assert normalized.lipschitz_bound() == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize(("size", "k"), [((6, 4), 3), ((3, 7), 5), ((5, 5), 1), ((6, 6), 3), ((4, 4), 5)])
def test_conv_bound_is_sound_and_certificates_take_the_exact_norm_while_small(size, k):
    torch.manual_seed(sum(size) + k)
    kernel = torch.randn(3, 2, k, k, dtype=torch.float64)
    exact = float(torch.linalg.matrix_norm(conv_matrix(kernel, size), 2))
    bound = float(conv_norm_bound(kernel, size))
    assert exact <= bound * (1 + 1e-12)
    certified = certified_conv_norm(kernel, size)
    if size[0] == size[1]:  # square and small: the exact norm of the operator matrix
        assert certified == pytest.approx(exact, rel=1e-10)
    else:
        assert certified == pytest.approx(bound, rel=1e-12)


def test_normalized_lift_has_norm_at_most_one():
    torch.manual_seed(3)
    lift = ImageEmbedding((2, 5, 6), 3, 3, [0.1, 0.2], [0.5, 0.25], normalized=True).double().eval()
    conv = lift.conv.weight.detach()
    assert float(torch.linalg.matrix_norm(conv_matrix(conv, (5, 6)), 2)) <= 1 + 1e-12
    assert lift.lipschitz_bound() <= 4 * (1 + 1e-12)


def test_conv_symplectic_step_is_exactly_invertible_and_its_potential_bound_holds():
    torch.manual_seed(4)
    size = (4, 5)
    potential, kinetic = (ConvGradientPotential(1, 3, size, 3) for _ in range(2))
    step = SymplecticEulerStep(2 * 20, 3, 0.5, kinetic=kinetic, potential=potential).double()
    x = torch.randn(6, 40, dtype=torch.float64)
    torch.testing.assert_close(step.inverse(step(x)), x, rtol=1e-12, atol=1e-12)
    for p in torch.randn(4, 20, dtype=torch.float64):
        j = jacobian(lambda v: kinetic(v.unsqueeze(0)).squeeze(0), p)
        assert float(torch.linalg.matrix_norm(j, 2)) <= kinetic.lipschitz_bound() * (1 + 1e-12)
        torch.testing.assert_close(j, j.T)  # the Jacobian of a gradient field is symmetric


def jacobian_norm(net, x: torch.Tensor) -> float:
    """‖∂net/∂x‖₂ at one input x, exactly (the full Jacobian's largest singular value)."""
    j = jacobian(lambda v: net(v.unsqueeze(0)).squeeze(0), x)
    return float(torch.linalg.matrix_norm(j.reshape(j.shape[0], -1), 2))


def jacobian_attack(net, shape: tuple[int, ...], starts: int = 8, steps: int = 60) -> float:
    """A strong search for the largest local Lipschitz constant: Adam ascent on ‖f(x + d) − f(x)‖/‖d‖ over pairs
    from ``starts`` random points, then the exact Jacobian norm at every point it visited last."""
    torch.manual_seed(11)
    x = torch.rand(starts, *shape, dtype=torch.float64).requires_grad_(True)
    d = (1e-3 * torch.randn(starts, *shape, dtype=torch.float64)).requires_grad_(True)
    opt = torch.optim.Adam([x, d], lr=2e-2)
    best = 0.0
    for _ in range(steps):
        ratio = (net(x + d) - net(x)).norm(dim=1) / d.flatten(1).norm(dim=1)
        best = max(best, float(ratio.detach().max()))
        opt.zero_grad()
        (-ratio.sum()).backward()
        opt.step()
    return max(best, *(jacobian_norm(net, xi) for xi in x.detach()))


@pytest.mark.parametrize("family", ["explicit", "implicit", "hamiltonian", "lipschitz"])
def test_image_network_bound_holds_against_a_strong_jacobian_search(family):
    from test_family_contract import KINDS, family_spec

    from models import build_model, lipschitz_bound

    torch.manual_seed(5)
    net = build_model(family_spec(family, "image", float64=True)).double().eval()
    bound = lipschitz_bound(net)
    shape = KINDS["image"][1]
    sampled = max(jacobian_norm(net, x) for x in torch.rand(8, *shape, dtype=torch.float64))
    searched = jacobian_attack(net, shape)
    assert sampled <= searched <= bound * (1 + 1e-9), (family, sampled, searched, bound)
