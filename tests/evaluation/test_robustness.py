"""Robustness numbers are right: certificates survive a strong attack, a linear model gives the closed-form answer,
PGD never beats clean accuracy, and the same spec gives the same numbers twice."""

import math

import pytest
import torch
from torch import nn

from core import metrics
from core.spec import JobSpec, ModelSpec
from evaluation.certified import QUANTILES, certified_accuracy, linear_quantiles, margin_radius, pairwise_radius
from evaluation.gaussian import gaussian_noise_accuracy
from evaluation.pgd import pgd_accuracy
from evaluation.runner import run_job
from models import build_model, lipschitz_bound


class LinearClassifier(nn.Module):
    """f(x) = Wx + b: its exact L2 robust radius is min_k (f_y − f_k)/‖w_y − w_k‖."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.head = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.copy_(bias)

    def forward(self, x):
        return self.head(x)

    def body_lipschitz_bound(self) -> float:
        return 1.0

    def lipschitz_bound(self) -> float:
        return float(torch.linalg.matrix_norm(self.head.weight.double(), 2))


def exact_linear_radius(model: LinearClassifier, x, y):
    logits = model(x)
    w = model.head.weight
    gaps = logits.gather(1, y[:, None]) - logits
    norms = (w[y][:, None, :] - w[None]).norm(dim=2)
    ratio = (gaps / norms).scatter(1, y[:, None], math.inf)
    return ratio.min(1).values.clamp_min(0)


def strong_pgd_l2(model, x, y, eps: torch.Tensor, steps=60, restarts=3, seed=0):
    """Our own strong L2 attack with a per-sample budget: a targeted margin attack towards *every* other class
    (as APGD-T does), several random restarts each. Returns True where some run flips the class."""
    gen = torch.Generator().manual_seed(seed)
    flipped = torch.zeros(len(x), dtype=torch.bool)
    e = eps.view(-1, *([1] * (x.dim() - 1)))
    with torch.no_grad():
        num_classes = model(x[:1]).shape[1]
    for offset in range(1, num_classes):
        target = (y + offset) % num_classes
        for _ in range(restarts):
            delta = torch.randn(x.shape, generator=gen)
            delta = delta / delta.flatten(1).norm(dim=1).view_as(e) * e * torch.rand(len(x), generator=gen).view_as(e)
            for _ in range(steps):
                delta.requires_grad_(True)
                logits = model(x + delta)
                loss = (logits.gather(1, target[:, None]) - logits.gather(1, y[:, None])).sum()
                grad = torch.autograd.grad(loss, delta)[0]
                with torch.no_grad():
                    step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view_as(e)
                    delta = delta + 0.1 * e * step
                    norm = delta.flatten(1).norm(dim=1).view_as(e)
                    delta = delta * torch.minimum(torch.ones_like(norm), e / norm.clamp_min(1e-12))
            with torch.no_grad():
                flipped |= model(x + delta).argmax(1) != y
    return flipped


def tiny_trained(family="explicit", theta=0.0, spectral=None, epochs=60):
    spec = {
        "name": "t",
        "dataset": {"name": "spirals"},
        "model": {
            "family": family,
            "width": 8,
            "depth": 3,
            "h": 0.3,
            **({"theta": theta} if theta else {}),
            **({"spectral": spectral} if spectral else {}),
        },
        "train": {"epochs": epochs, "lr": 0.02},
        "evaluate": {"gaussian": None},
    }
    return run_job(JobSpec.model_validate(spec)).model


@pytest.mark.parametrize(
    "family,theta,spectral", [("explicit", 0.0, None), ("implicit", 0.5, {"lower": -1.0, "upper": 1.0})]
)
def test_certified_samples_survive_strong_attack_at_098_radius(family, theta, spectral):
    from evaluation.datasets import two_spirals

    model = tiny_trained(family, theta, spectral).eval()
    data = two_spirals()
    x, y = data.x_test, data.y_test
    _, info = certified_accuracy(model, x, y, [0.01])
    radius = info["radius"].to(x.dtype)  # float64 radii; the attack runs in the data's dtype
    certified = radius > 0
    assert certified.sum() >= 5, "need some certified samples for the test to mean anything"
    flipped = strong_pgd_l2(model, x[certified], y[certified], 0.98 * radius[certified])
    assert not flipped.any()


def test_linear_classifier_gets_exact_certified_and_near_exact_pgd():
    torch.manual_seed(0)
    w, b = torch.randn(3, 5), torch.randn(3)
    model = LinearClassifier(w, b)
    x = 2.0 * torch.randn(400, 5)  # unbounded data far outside [0, 1]: exercises the attack-box adapter
    with torch.no_grad():
        y = model(x).argmax(1)
        y[:40] = (y[:40] + 1) % 3  # some misclassified points
    exact = exact_linear_radius(model, x, y).detach()
    eps_list = [0.1, 0.3, 0.6]
    metrics, info = certified_accuracy(model, x, y, eps_list)
    assert info["method"] == "pairwise"
    pgd, _ = pgd_accuracy(model, x, y, "L2", eps_list, steps=100, restarts=2)
    for eps in eps_list:
        truth = float((exact > eps).float().mean())
        assert metrics[f"certified_l2_acc@{eps:g}"] == pytest.approx(truth, abs=1e-12)
        assert truth <= pgd[f"pgd_l2_acc@{eps:g}"] <= truth + 2 / len(x)
    assert metrics["lipschitz_bound"] == pytest.approx(lipschitz_bound(model))
    # the plain margin certificate is sound too, just looser
    assert (margin_radius(model(x).detach(), y, lipschitz_bound(model)) <= exact + 1e-6).all()


def test_strong_attack_is_strong_beyond_the_exact_radius():
    torch.manual_seed(1)
    model = LinearClassifier(torch.randn(3, 4), torch.randn(3))
    x = torch.randn(100, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    exact = exact_linear_radius(model, x, y).detach()
    assert strong_pgd_l2(model, x, y, 1.02 * exact + 1e-4).all()


def test_pgd_never_above_clean_and_spirals_are_not_corrupted_by_the_box():
    model = tiny_trained().eval()
    from evaluation.datasets import two_spirals

    data = two_spirals()
    with torch.no_grad():
        clean = float((model(data.x_test).argmax(1) == data.y_test).float().mean())
    for norm in ("Linf", "L2"):
        metrics, settings = pgd_accuracy(model, data.x_test, data.y_test, norm, [1e-6, 0.05, 0.2], steps=20, restarts=2)
        assert metrics[f"pgd_{norm.lower()}_acc@1e-06"] == pytest.approx(clean)  # a tiny ε changes nothing
        values = [metrics[f"pgd_{norm.lower()}_acc@{e:g}"] for e in (1e-06, 0.05, 0.2)]
        assert values == sorted(values, reverse=True) and values[0] <= clean
        assert settings["box"]["low"] < float(data.x_test.min())


def test_attacks_count_only_samples_the_given_clean_logits_classify_correctly():
    """With the evaluation's clean logits, the clean-correct set is exactly theirs (robust ≤ clean sample by
    sample): the same numbers as the attack's own clean pass, and none where those logits are all wrong."""
    model = tiny_trained().eval()
    from evaluation.datasets import two_spirals

    data = two_spirals()
    x, y = data.x_test, data.y_test
    with torch.no_grad():
        logits = model(x)
    own, _ = pgd_accuracy(model, x, y, "L2", [0.05], steps=10, restarts=1)
    given, _ = pgd_accuracy(model, x, y, "L2", [0.05], steps=10, restarts=1, clean_logits=logits)
    assert given == own and own["pgd_l2_acc@0.05"] > 0.5
    wrong = torch.nn.functional.one_hot((y + 1) % 2, 2).float()  # logits that misclassify every sample
    none, _ = pgd_accuracy(model, x, y, "L2", [0.05], steps=10, restarts=1, clean_logits=wrong)
    assert none == {"pgd_l2_acc@0.05": 0.0}
    with pytest.raises(ValueError, match="rows"):
        pgd_accuracy(model, x, y, "L2", [0.05], steps=10, restarts=1, clean_logits=logits[:-1])


def test_gaussian_sigma_zero_is_clean_accuracy_and_accuracy_decays():
    model = tiny_trained().eval()
    from evaluation.datasets import two_spirals

    data = two_spirals()
    with torch.no_grad():
        clean = float((model(data.x_test).argmax(1) == data.y_test).float().mean())
    m = gaussian_noise_accuracy(model, data.x_test, data.y_test, [0.0, 0.5, 5.0], repeats=4)
    assert m["gaussian_acc@0"] == pytest.approx(clean) and m["gaussian_acc_std@0"] == 0
    assert m["gaussian_acc@5"] < m["gaussian_acc@0"]


def test_same_spec_gives_same_numbers_twice(tmp_path):
    spec = JobSpec.model_validate(
        {
            "name": "repro",
            "dataset": {"name": "spirals"},
            "model": {"family": "implicit", "width": 6, "depth": 3, "h": 0.3, "theta": 0.5},
            "train": {"epochs": 15, "lr": 0.02, "regularizers": {"stochastic": {"sigma": 0.05}}},
            "evaluate": {
                "gaussian": {"sigmas": [0.1], "repeats": 3},
                "pgd": {"eps": [0.05], "steps": 5},
                "certified": {"eps": [0.05]},
            },
        }
    )
    a, b = run_job(spec).metrics, run_job(spec).metrics
    assert {k: v for k, v in a.items() if not metrics.is_timing(k)} == {
        k: v for k, v in b.items() if not metrics.is_timing(k)
    }


def test_model_spec_without_dims_is_refused():
    with pytest.raises(ValueError, match="input_dim"):
        build_model(ModelSpec(family="explicit"))


def test_pairwise_radius_with_identical_head_rows():
    """Classes 0 and 1 have the same head row and bias, so f_0 = f_1 everywhere: a sample of either is a tie,
    never certified (radius 0, where a plain ratio would give 0/0 = NaN); class 2's radius is the usual one."""
    model = LinearClassifier(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), torch.zeros(3))
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1)
    y[:20] = 1
    radius = pairwise_radius(logits, y, model.head.weight, 1.0)
    f = logits.double()
    expected = torch.where(y == 2, (f[:, 2] - f[:, 0]) / math.sqrt(2), 0.0).clamp_min(0)
    assert torch.isfinite(radius).all() and (y == 0).any() and (expected > 0).sum() > 50
    torch.testing.assert_close(radius, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 7, 100, 797])
def test_linear_quantiles_are_numpys_default_quantiles(n):
    import numpy as np

    values = torch.rand(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64) ** 3
    expected = np.quantile(values.numpy(), QUANTILES).tolist()
    assert linear_quantiles(values, QUANTILES) == pytest.approx(expected, rel=1e-14, abs=0.0)  # to the last bits
