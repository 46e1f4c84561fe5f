"""The "auto" solver choice of the θ-step: fixed point + Neumann where θh·Lip(F) < 1 is proven from exact norms,
Anderson + GMRES otherwise; explicit names honoured; the pair that ran recorded in the stats and the job's info;
gradients still exact (finite differences, float64)."""

import pytest
import torch
from pydantic import ValidationError
from torch.autograd.functional import jacobian

from core.spec import AUTO_SOLVER, JobSpec, ModelSpec
from evaluation.runner import run_job
from models import build_model
from models.residual import ResidualFunction
from models.solvers.auto import CONTRACTIVE_PAIR, GENERAL_PAIR, resolve_solvers
from models.spectral_norms import exact_spectral_norm
from models.steps import SolverConfig, ThetaStep


def auto_step(lip, h=0.5, theta=1.0, width=6, seed=0, spectral=None):
    """A θ-step whose bound θh·Lip(F) is ``lip`` (weights scaled by exact norms), solvers "auto"."""
    torch.manual_seed(seed)
    f = ResidualFunction(width, width + 2, spectral=spectral).double()
    if spectral is None:
        with torch.no_grad():
            scale = (lip / (h * theta * exact_spectral_norm(f.lin1.weight) * exact_spectral_norm(f.lin2.weight))) ** 0.5
            f.lin1.weight.mul_(scale)
            f.lin2.weight.mul_(scale)
    solver = SolverConfig(forward=AUTO_SOLVER, backward=AUTO_SOLVER, tol=1e-12, max_iter=500,
                          backward_tol=1e-12, backward_max_iter=500)  # fmt: skip
    return ThetaStep(f, h=h, theta=theta, solver=solver)


def test_resolution_rule():
    assert resolve_solvers("auto", "auto", 0.99) == CONTRACTIVE_PAIR == ("fixed_point", "neumann")
    assert resolve_solvers("auto", "auto", 1.0) == GENERAL_PAIR == ("anderson", "gmres")
    assert resolve_solvers("auto", "auto", None) == GENERAL_PAIR
    assert resolve_solvers("ncg_pr", "auto", 0.5) == ("ncg_pr", "neumann")  # an explicit name is honoured
    assert resolve_solvers("auto", "fixed_point", 2.0) == ("anderson", "fixed_point")


@pytest.mark.parametrize("lip,pair", [(0.9, CONTRACTIVE_PAIR), (1.5, GENERAL_PAIR)])
def test_auto_picks_by_the_proven_contraction_and_records_it(lip, pair):
    step = auto_step(lip, theta=0.5)
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    y = step(x)
    y.square().sum().backward()
    assert step.stats.pairs == {f"{pair[0]} + {pair[1]}": 1}
    assert step.contraction_bound(None, step.residual.weights()) == pytest.approx(lip, rel=1e-12)
    # the same fixed point as the general pair reaches, and converged
    reference = auto_step(lip, theta=0.5)
    reference.solver.forward, reference.solver.backward = GENERAL_PAIR
    torch.testing.assert_close(y, reference(x), rtol=1e-10, atol=1e-10)
    assert not step.stats.failures


def test_the_bound_is_above_the_jacobian_norm_of_the_term():
    step = auto_step(0.9)
    hth = step.h * step.theta
    bound = step.contraction_bound(None, step.residual.weights())
    for _ in range(20):
        z = torch.randn(6, dtype=torch.float64) * 3
        jac = jacobian(lambda v: hth * step.residual(v[None])[0], z)
        assert float(torch.linalg.matrix_norm(jac, 2)) <= bound


def test_gradients_with_the_contractive_pair_match_finite_differences():
    step = auto_step(0.8, theta=0.7)
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(step, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)
    assert set(step.stats.pairs) == {"fixed_point + neumann"}


def test_an_explicit_choice_is_honoured_on_a_contractive_step():
    step = auto_step(0.5)
    step.solver.forward, step.solver.backward = "anderson", "gmres"
    step(torch.randn(4, 6, dtype=torch.float64)).sum().backward()
    assert step.stats.pairs == {"anderson + gmres": 1}


def test_a_weight_update_is_seen():
    """The bound is kept while the weights are unchanged and recomputed after an in-place update (an optimiser
    step): growing the weights past contraction switches to the general pair."""
    step = auto_step(0.9)
    x = torch.randn(4, 6, dtype=torch.float64)
    with torch.no_grad():
        step(x)
        step.residual.lin2.weight.mul_(2.0)  # θh·Lip(F) = 1.8
        step(x)
    assert step.stats.pairs == {"fixed_point + neumann": 1, "anderson + gmres": 1}


@pytest.mark.parametrize("train", [True, False])
def test_localised_field_is_contractive_by_construction(train):
    """F^{α,β} with [α, β] = [−1, 0.5]: Lip(F) ≤ |α+β|/2 + (β−α)/2·max S·Lip(F̃) ≈ 0.25 + 0.75·0.5, so hθ = 0.5
    gives a contraction — in training too, where the weights are normalised by a power-iteration estimate (the
    bound takes the exact norms of the weights this pass uses)."""
    step = auto_step(0.0, spectral=(-1.0, 0.5))
    step.train(train)
    step(torch.randn(8, 6, dtype=torch.float64)).sum().backward()
    assert step.stats.pairs == {"fixed_point + neumann": 1}


def test_spec_accepts_auto_and_keeps_old_specs_as_they_were():
    base = {"family": "implicit", "width": 4, "depth": 1, "theta": 0.5, "input_dim": 2, "output_dim": 2}
    spec = ModelSpec.model_validate({**base, "solver": {"forward": "auto", "backward": "auto"}})
    assert (spec.solver.forward, spec.solver.backward) == ("auto", "auto")
    assert ModelSpec.model_validate(base).solver.forward == "anderson"  # the default is unchanged
    with pytest.raises(ValidationError, match="solver.forward"):
        ModelSpec.model_validate({**base, "solver": {"forward": "automatic"}})


def test_a_conv_step_resolves_from_the_convolution_norms():
    spec = ModelSpec(family="implicit", conv=True, channels=2, hidden=2, kernel_size=3, depth=1, h=0.1, theta=1.0,
                     input_dim=16, output_dim=2, solver={"forward": "auto", "backward": "auto"})  # fmt: skip
    torch.manual_seed(0)
    net = build_model(spec).double()
    step = net.steps[0]
    net(torch.randn(3, 16, dtype=torch.float64)).sum().backward()
    expected = "fixed_point + neumann" if 0.1 * step.residual.lipschitz_bound() < 1 else "anderson + gmres"
    assert step.stats.pairs == {expected: 1}


def test_the_job_info_says_which_pair_ran():
    spec = {
        "name": "auto",
        "dataset": {"name": "spirals", "n_train": 40, "n_test": 20},
        "model": {"family": "implicit", "width": 4, "depth": 2, "h": 0.3, "theta": 0.5,
                  "spectral": {"lower": -1.0, "upper": 1.0}, "solver": {"forward": "auto", "backward": "auto"}},
        "train": {"epochs": 2, "lr": 0.01},
        "evaluate": {"gaussian": None},
    }  # fmt: skip
    result = run_job(JobSpec.model_validate(spec))
    pairs = result.info["solver"]["pairs"]
    assert set(pairs) == {"fixed_point + neumann"} and sum(pairs.values()) > 0  # θh·Lip F ≤ 0.15·1 < 1
