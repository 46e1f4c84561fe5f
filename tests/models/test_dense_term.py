"""The closed-form implicit term hθF of the dense residual functions (models.residual.DenseTerm) against autograd,
in float64: the fixed-point map, the VJP in z and the parameter VJP (through the folding of hθ, the localisation
and the scale into the weights)."""

import pytest
import torch

from models.ode import ODEVectorField
from models.residual import ACTIVATIONS, DenseTerm, ResidualFunction
from models.steps import AutogradTerm, implicit_term

COEFF = 0.7


def dense_residuals():
    for activation in ACTIVATIONS:
        for spectral in (None, (-1.0, 0.5)):
            yield f"residual-{activation}-{spectral}", lambda a=activation, s=spectral: ResidualFunction(5, 7, a, s)
        yield f"ode-{activation}", lambda a=activation: ODEVectorField(5, 7, a)


CASES = dict(dense_residuals())


@pytest.mark.parametrize("name", list(CASES))
def test_dense_term_matches_autograd_of_coeff_times_f(name):
    torch.manual_seed(0)
    residual = CASES[name]().double()
    if getattr(residual, "scale_logit", None) is not None:
        with torch.no_grad():
            residual.scale_logit.normal_()  # a non-trivial S(ϑ)
    params = residual.weights()
    y = (30 * torch.randn(6, 5, dtype=torch.float64)).requires_grad_(True)  # large: softplus's linear branch too
    base, v, g = (torch.randn(6, 5, dtype=torch.float64) for _ in range(3))

    term = implicit_term(residual, params, COEFF, y)
    assert isinstance(term, DenseTerm)
    frozen = term.with_tensors({k: t.detach() for k, t in term.tensors().items()})
    fy = COEFF * residual.apply(params, y)

    with torch.no_grad():
        torch.testing.assert_close(frozen.fixed_point_map(base)(y), base + fy, rtol=1e-12, atol=1e-12)
        linear = frozen.linearize(y.detach())
        jtv = linear.vjp(v)
    torch.testing.assert_close(jtv, torch.autograd.grad(fy, y, v, retain_graph=True)[0], rtol=1e-12, atol=1e-12)

    # parameter VJP: for the folded tensors, carried back to F's parameters through the folding's graph
    names = list(frozen.tensors())
    folded = linear.param_vjp(g, names)
    leaves = list(residual.parameters())
    via_fold = torch.autograd.grad(
        [term.tensors()[n] for n in names], leaves, [folded[n] for n in names], allow_unused=True, retain_graph=True
    )
    direct = torch.autograd.grad(fy, leaves, g, allow_unused=True)
    for a, b in zip(via_fold, direct, strict=True):
        if b is None:
            assert a is None or a.abs().max() == 0
        else:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_residuals_without_closed_form_fall_back_to_autograd():
    torch.manual_seed(0)
    residual = ResidualFunction(4, 4).double()
    residual.activation = torch.nn.ELU()  # no closed-form σ' known
    x = torch.randn(3, 4, dtype=torch.float64)
    assert isinstance(implicit_term(residual, residual.weights(), COEFF, x), AutogradTerm)
    f = ResidualFunction(4, 4).double()
    assert isinstance(implicit_term(f, f.weights(), COEFF, x[None]), AutogradTerm)  # not a (batch, width) state
