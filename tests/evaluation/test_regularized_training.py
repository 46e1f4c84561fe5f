"""The training loop adds weight × value of each named regularizer to the loss and logs it (``reg_<name>``), and
reports solver diagnostics per epoch and over training; a non-converged solve warns and is counted, never silent."""

import copy

import pytest
import torch

from core.spec import ModelSpec, TrainSpec
from evaluation.datasets import two_spirals
from evaluation.training import train_classifier
from models import build_model
from models.regularizers import REGULARIZERS, field_norm_penalty, total_variation_penalty

CPU = torch.device("cpu")


def net(family="ode", **fields):
    torch.manual_seed(0)
    base = {"ode": {"hidden": 6, "t_final": 1.0}, "explicit": {"width": 4, "hidden": 6, "h": 0.3}}[family]
    return build_model(ModelSpec(family=family, depth=3, input_dim=2, output_dim=2, **{**base, **fields}))


def test_every_regularizer_is_added_and_logged():
    data = two_spirals(24, 24)
    events = []
    spec = TrainSpec(epochs=2, lr=0.01, regularizers={name: 0.01 for name in REGULARIZERS})
    summary = train_classifier(net(), data, spec, CPU, progress=events.append)
    assert len(events) == 2
    for event in events:
        for name in REGULARIZERS:
            assert f"reg_{name}" in event
        assert event["solver_forward_iterations"] >= 1 and event["solver_failures"] == 0
        assert event["solver_backward_iterations"] >= 1 and "solver_forward_residual" in event
    for name in REGULARIZERS:
        assert summary[f"reg_{name}"] == events[-1][f"reg_{name}"]
    assert summary["solver_train_forward_iterations"] >= events[-1]["solver_forward_iterations"]
    assert summary["solver_train_failures"] == 0


def test_loss_is_cross_entropy_plus_weighted_values():
    data = two_spirals(24, 24)
    model = net("explicit")
    initial = copy.deepcopy(model)
    events = []
    spec = TrainSpec(epochs=1, lr=0.01, regularizers={"field_norm": 0.5, "total_variation": {"weight": 2.0}})
    train_classifier(model, data, spec, CPU, progress=events.append)
    logits, states = initial(data.x_train, return_states=True)
    with torch.no_grad():
        ce = float(torch.nn.functional.cross_entropy(logits, data.y_train))
        r_f, tv = float(field_norm_penalty(initial, states)), float(total_variation_penalty(initial))
    assert events[0]["reg_field_norm"] == pytest.approx(r_f, rel=1e-5)
    assert events[0]["reg_total_variation"] == pytest.approx(tv, rel=1e-5)
    assert events[0]["loss"] == pytest.approx(ce + 0.5 * r_f + 2.0 * tv, rel=1e-5)


def test_non_converged_solves_warn_and_are_counted():
    data = two_spirals(16, 16)
    model = net(solver={"forward": "fixed_point", "tol": 1e-12, "max_iter": 2})
    events = []
    with pytest.warns(RuntimeWarning) as caught:
        summary = train_classifier(model, data, TrainSpec(epochs=2), CPU, progress=events.append)
    messages = {str(w.message).split(" stopped")[0] for w in caught}
    assert messages == {"forward solve", "backward solve"}  # both solvers had max_iter = 2
    assert all(event["solver_failures"] > 0 for event in events)
    assert summary["solver_train_failures"] >= sum(event["solver_failures"] for event in events)
    # the steps keep the training totals, so the runner's solver_* metrics cover training too
    assert sum(len(s.failures) for s in model.solver_stats()) >= summary["solver_train_failures"]


def test_stochastic_penalty_is_reshniak_webster_eq_10_over_every_stream():
    """Σ_t (t/T)^r Σ_p ‖y_t − ỹ_t^(p)‖, batch mean, against a direct float64 loop; gradients by finite differences."""
    from evaluation.training import stochastic_state_penalty

    gen = torch.Generator().manual_seed(0)
    T, P, B, D, r = 3, 2, 4, 5, 0.5
    states = [torch.randn(B, D, generator=gen, dtype=torch.float64) for _ in range(T + 1)]
    perturbed = [torch.randn(P * B, D, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(T + 1)]
    direct = sum(
        (t / T) ** r
        * sum(float((states[t][b] - perturbed[t][p * B + b]).norm()) for p in range(P) for b in range(B))
        / B
        for t in range(1, T + 1)
    )
    assert float(stochastic_state_penalty(states, perturbed, r)) == pytest.approx(direct, rel=1e-12)
    assert torch.autograd.gradcheck(lambda *ys: stochastic_state_penalty(states, list(ys), r), perturbed)


def test_stochastic_regularizer_sums_over_its_streams_in_training():
    data = two_spirals(24, 24)
    losses = {}
    for streams in (1, 3):
        reg = {"stochastic": {"sigma": 0.3, "streams": streams, "power": 2.0}}
        spec = TrainSpec(epochs=1, lr=1e-6, regularizers=reg)
        losses[streams] = train_classifier(net("explicit"), data, spec, CPU, progress=lambda _e: None)["train_loss"]
    # the same network and data: the loss is cross-entropy + the penalty, which sums three streams' distances
    assert losses[3] > losses[1] > 0
