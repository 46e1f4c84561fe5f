"""Lipschitz bounds are sound: never below an empirical ratio, even one maximised by gradient ascent."""

import pytest
import torch

from core.spec import ModelSpec
from models import LipschitzBoundUnavailable, build_model, lipschitz_bound

CASES = [
    ("explicit", 0.0, None, 0.3),
    ("implicit", 0.5, None, 0.3),
    ("implicit", 1.0, {"lower": -1.0, "upper": 1.0}, 0.5),
    ("implicit", 0.25, {"lower": -2.0, "upper": 0.0}, 0.4),
]


def build(family, theta, spectral, h, seed=0):
    torch.manual_seed(seed)
    solver = {"solver": {"tol": 1e-10, "max_iter": 300}} if family == "implicit" else {}  # explicit: no solver
    spec = ModelSpec(family=family, width=6, depth=4, h=h, theta=theta, spectral=spectral, input_dim=2, output_dim=3,
                     **solver)
    return build_model(spec).double().eval()


def largest_local_ratio(net, steps=150, dim=2):
    """Gradient ascent on ‖f(x)−f(x')‖/‖x−x'‖ over pairs (x, x')."""
    torch.manual_seed(1)
    x = torch.randn(32, dim, dtype=torch.float64, requires_grad=True)
    d = (1e-2 * torch.randn(32, dim, dtype=torch.float64)).requires_grad_(True)
    opt = torch.optim.Adam([x, d], lr=1e-2)
    best = 0.0
    for _ in range(steps):
        ratio = (net(x + d) - net(x)).norm(dim=1) / d.norm(dim=1)
        best = max(best, float(ratio.max()))
        opt.zero_grad()
        (-ratio.sum()).backward()
        opt.step()
    return best


@pytest.mark.parametrize("family,theta,spectral,h", CASES)
def test_bound_is_never_exceeded(family, theta, spectral, h):
    net = build(family, theta, spectral, h)
    bound = lipschitz_bound(net)
    x, x2 = torch.randn(2000, 2, dtype=torch.float64), torch.randn(2000, 2, dtype=torch.float64)
    with torch.no_grad():
        random_ratio = float(((net(x) - net(x2)).norm(dim=1) / (x - x2).norm(dim=1)).max())
    searched = largest_local_ratio(net)
    assert random_ratio <= bound and searched <= bound * (1 + 1e-9)
    assert searched > 0.01 * bound / 1e3  # the search found a real ratio, not zero


# Hamiltonian (symplectic Euler) and 1-Lipschitz gradient-flow families (Murari); conv on 2×2 "images".
NEW_FAMILY_CASES = [
    {"family": "hamiltonian", "h": 0.5},
    {"family": "hamiltonian", "h": 1.0, "activation": "relu"},
    {"family": "lipschitz", "activation": "relu"},
    {"family": "lipschitz", "activation": "relu", "conv": True, "channels": 2, "input_dim": 4},
]


@pytest.mark.parametrize("fields", NEW_FAMILY_CASES, ids=lambda f: "-".join(str(v) for v in f.values()))
def test_new_family_bound_is_never_exceeded(fields):
    torch.manual_seed(0)
    fields = {"depth": 4, "input_dim": 2, "output_dim": 3, **({} if fields.get("conv") else {"width": 6}), **fields}
    net = build_model(ModelSpec(**fields)).double().eval()
    bound = lipschitz_bound(net)
    dim = fields["input_dim"]
    x, x2 = torch.randn(2000, dim, dtype=torch.float64), torch.randn(2000, dim, dtype=torch.float64)
    with torch.no_grad():
        random_ratio = float(((net(x) - net(x2)).norm(dim=1) / (x - x2).norm(dim=1)).max())
    searched = largest_local_ratio(net, steps=100, dim=dim)
    assert random_ratio <= bound and searched <= bound * (1 + 1e-9)
    assert searched > 1e-5 * bound
    if fields["family"] == "lipschitz":
        assert bound == pytest.approx(1.0, abs=1e-9)


def test_implicit_bound_refuses_when_condition_fails():
    torch.manual_seed(0)
    net = build("implicit", 1.0, None, 5.0)
    with pytest.raises(LipschitzBoundUnavailable, match="θ·h·Lip"):
        lipschitz_bound(net)
