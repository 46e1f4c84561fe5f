"""``train.loss: "multi_margin"``: the multi-class hinge of certified training, against a hand computation, at the
margin √2·ε·L with L the model's sound Lipschitz bound (or a margin in logit units)."""

from __future__ import annotations

import math

import pytest
import torch

from core.spec import ModelSpec, TrainSpec
from evaluation.datasets import two_spirals
from evaluation.training import lipschitz_margin, multi_margin_hinge, train_classifier
from models import build_model, lipschitz_bound

CPU = torch.device("cpu")


def hinge_by_hand(logits: torch.Tensor, y: torch.Tensor, margin: float) -> float:
    """mean over samples of (1/C) Σ_{j≠y} max(0, m − (f_y − f_j)), with loops in float64."""
    total = 0.0
    n, classes = logits.shape
    for i in range(n):
        f = logits[i].double().tolist()
        t = int(y[i])
        total += sum(max(0.0, margin - (f[t] - f[j])) for j in range(classes) if j != t) / classes
    return total / n


def test_the_hinge_is_the_mean_of_the_margin_shortfalls() -> None:
    gen = torch.Generator().manual_seed(0)
    logits, y = torch.randn(7, 4, generator=gen, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0, 1, 2])
    for margin in (0.1, 0.7, 3.0):
        assert float(multi_margin_hinge(logits, y, margin)) == pytest.approx(hinge_by_hand(logits, y, margin), 1e-12)
    far = torch.zeros(3, 4, dtype=torch.float64)
    far[torch.arange(3), torch.tensor([1, 2, 3])] = 2.0  # the true logit 2 above every other one
    assert float(multi_margin_hinge(far, torch.tensor([1, 2, 3]), 1.5)) == 0.0  # margin met: no loss
    assert float(multi_margin_hinge(far, torch.tensor([1, 2, 3]), 2.5)) == pytest.approx(3 * 0.5 / 4)


def test_the_margin_is_the_certificates_threshold() -> None:
    assert lipschitz_margin(36 / 255, 1.0) == pytest.approx(math.sqrt(2) * 36 / 255)
    assert lipschitz_margin(0.1, 3.0) == pytest.approx(3 * lipschitz_margin(0.1, 1.0))


def lipschitz_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec(family="lipschitz", width=6, hidden=8, depth=2, input_dim=2, output_dim=2))


@pytest.mark.parametrize("margin", [{"eps": 0.3}, {"logits": 0.5}])
def test_training_minimises_the_hinge_at_the_margin_of_the_spec(margin: dict) -> None:
    data = two_spirals(40, 10)
    initial = lipschitz_net()
    expected_margin = lipschitz_margin(0.3, lipschitz_bound(initial)) if "eps" in margin else 0.5
    with torch.no_grad():
        first_loss = hinge_by_hand(initial(data.x_train), data.y_train, expected_margin)
    events: list[dict] = []
    spec = TrainSpec(epochs=3, lr=0.02, loss="multi_margin", margin=margin)
    summary = train_classifier(lipschitz_net(), data, spec, CPU, progress=events.append)
    assert events[0]["margin"] == pytest.approx(expected_margin, rel=1e-12)
    assert events[0]["loss"] == pytest.approx(first_loss, rel=1e-5)  # one full batch: the initial weights' loss
    assert events[-1]["loss"] < events[0]["loss"] and summary["train_loss"] == events[-1]["loss"]


def test_a_margin_in_radius_units_needs_a_lipschitz_bound() -> None:
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Linear(2, 2))  # no lipschitz_bound
    spec = TrainSpec(epochs=1, loss="multi_margin", margin={"eps": 0.1})
    with pytest.raises(ValueError, match=r"train.margin.eps needs the model's Lipschitz bound .*train.margin.logits"):
        train_classifier(plain, two_spirals(20, 10), spec, CPU)
    train_classifier(plain, two_spirals(20, 10), TrainSpec(epochs=1, loss="multi_margin", margin={"logits": 1}), CPU)
