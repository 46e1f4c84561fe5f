"""The strong suite as the default and the best-known robust accuracy (evaluation.autoattack, evaluation.best_known):
torchattacks' weakening defaults overridden and recorded, the Carlini–Wagner margin for 2 classes, the per-sample
minimum over every attack as the headline, the sanity ε, and the suite's 10-step floor."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from core.spec import JobSpec
from evaluation.autoattack import (
    STANDARD,
    attack_settings,
    build_attack,
    cw_margin_loss,
    sanity_eps,
    suite_robust,
)
from evaluation.best_known import AttackRecord, per_sample_robust, robust_metrics
from evaluation.outcomes import unpack_outcomes
from evaluation.runner import run_job
from tests.evaluation.test_robustness import LinearClassifier


def linear_problem(classes: int, features: int, n: int, seed: int = 0):
    torch.manual_seed(seed)
    model = LinearClassifier(torch.randn(classes, features), torch.randn(classes))
    x = torch.rand(n, features)  # in [0, 1]: the attacks work in the data's own box
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def test_torchattacks_defaults_are_overridden_and_every_setting_recorded():
    # torchattacks' APGD-T and FAB default to 10 steps and n_classes=10 (9 targets); a 5-class task needs 4
    target = LinearClassifier(torch.randn(5, 4), torch.zeros(5))
    for name in ("apgd-t", "fab-t"):
        settings = attack_settings(name, "Linf", 5, seed=0, steps=100, queries=5000, restarts=1)
        attack = build_attack(name, target, 0.1, settings)
        assert attack.steps == 100 and attack.n_target_classes == 4
    apgd = build_attack("apgd-ce", target, 0.1, attack_settings("apgd-ce", "L2", 5, 0, 100, 5000, 2))
    assert (apgd.steps, apgd.n_restarts, apgd.loss, apgd.norm) == (100, 2, "ce", "L2")
    square = build_attack("square", target, 0.1, attack_settings("square", "Linf", 5, 0, 100, 5000, 1))
    assert square.n_queries == 5000 and square.loss == "margin"

    model, x, y = linear_problem(classes=5, features=16, n=40)  # 16 features: a 4×4 image, Square runs for L∞
    outcomes, settings = suite_robust(model, x, y, "Linf", [0.05], n_classes=5, valid_range=(0.0, 1.0))
    assert settings["protocol"] == "standard" and settings["attacks"] == ["apgd-ce", "apgd-dlr", "apgd-t", "fab-t",
                                                                            "square"]  # fmt: skip
    assert settings["members"]["apgd-t"] == {"class": "APGDT", "norm": "Linf", "n_restarts": 1, "seed": 0,
                                             "steps": 100, "n_classes": 5, "eot_iter": 1, "rho": 0.75}  # fmt: skip
    assert settings["members"]["fab-t"]["n_classes"] == 5 and settings["members"]["square"]["n_queries"] == 5000
    # each member attacked only what the earlier ones left: the flips add up to the clean-correct minus the robust
    flips = sum(int(m.sum()) for m in outcomes[0.05].flipped_by.values())
    assert flips == len(x) - int(outcomes[0.05].robust.sum())
    for a, b in [(a, b) for a in outcomes[0.05].flipped_by.values() for b in outcomes[0.05].flipped_by.values()]:
        assert a is b or not (a & b).any()


def test_two_classes_get_the_carlini_wagner_margin_and_the_exact_linf_robust_accuracy():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, 1.0]])
    assert torch.allclose(cw_margin_loss(logits, torch.tensor([0, 2])), torch.tensor([-1.5, 2.0]))
    torch.manual_seed(1)
    weight = torch.randn(2, 3)
    bias = torch.tensor([0.0, -float((weight[1] - weight[0]).sum()) / 2])  # the boundary through the cube's centre
    model = LinearClassifier(weight, bias)
    x = torch.rand(200, 3)
    with torch.no_grad():
        y = model(x).argmax(1)
    w = weight[1] - weight[0]
    margin = (x @ w + bias[1] - bias[0]).abs()
    # exact L∞ radius of a linear binary classifier: |margin| / ‖w‖₁ (inside [0, 1]³ the box can only cut it off,
    # so the truth is bounded below by the unconstrained radius's count)
    exact = (margin / w.abs().sum()).detach()
    outcomes, settings = suite_robust(model, x, y, "Linf", [0.05, 0.1], n_classes=2, attacks=("apgd-cw",),
                                      valid_range=(0.0, 1.0))  # fmt: skip
    assert settings["attacks"] == ["apgd-cw"] and settings["members"]["apgd-cw"]["loss"] == "cw-margin"
    for eps in (0.05, 0.1):
        found = float(outcomes[eps].robust.float().mean())
        truth = float((exact > eps).float().mean())
        assert 0.3 < truth < 0.95  # a problem where ε matters
        # never below the truth (an attack finds real points), and at most the few samples whose best direction
        # the [0, 1] box cuts off
        assert truth <= found <= truth + 0.03


def test_best_known_is_the_per_sample_minimum_over_every_attack():
    clean = torch.tensor([True, True, True, False])
    records = [
        AttackRecord("pgd", "Linf", 0.1, torch.tensor([True, False, True, False])),
        AttackRecord("autoattack", "Linf", 0.1, torch.tensor([True, True, False, False])),
        AttackRecord("pgd", "Linf", 0.2, torch.tensor([False, False, True, False])),
    ]
    masks = per_sample_robust(records, clean)
    metrics = robust_metrics(masks, ("pgd", "autoattack", "robust"))
    assert masks["robust_linf_acc@0.1"].tolist() == [True, False, False, False]
    # both attacks say 50 %; only one sample survived both, so the best known is 25 %: below either figure
    assert metrics["pgd_linf_acc@0.1"] == metrics["autoattack_linf_acc@0.1"] == 0.5
    assert metrics["robust_linf_acc@0.1"] == 0.25 and metrics["robust_linf_acc@0.2"] == 0.25


def test_the_sanity_eps_reaches_chance():
    model, x, y = linear_problem(classes=4, features=9, n=60)
    assert sanity_eps(x, "Linf", (0.0, 1.0)) == 1.0 and sanity_eps(x, "L2", (0.0, 1.0)) == 3.0
    _, settings = suite_robust(model, x, y, "Linf", [0.01], n_classes=4, steps=20, queries=100, sanity=True,
                               valid_range=(0.0, 1.0))  # fmt: skip
    assert settings["sanity"]["eps"] == 1.0
    assert settings["sanity"]["acc"] <= float(torch.bincount(y).max()) / len(y)


SPEC = {
    "name": "best-known",
    "dataset": {"name": "spirals", "n_train": 100, "n_test": 60},
    "model": {"family": "explicit", "width": 8, "depth": 3, "h": 0.3},
    "train": {"epochs": 30, "lr": 0.02},
}


def test_a_job_with_only_pgd_is_headlined_by_pgd_and_flagged():
    spec = JobSpec.model_validate(
        SPEC | {"evaluate": {"gaussian": None, "pgd": {"norm": ["Linf"], "eps": [0.05, 0.2], "steps": 10}}}
    )
    result = run_job(spec)
    m = result.metrics
    assert m["robust_linf_acc@0.05"] == m["pgd_linf_acc@0.05"]
    assert m["robust_linf_acc@0.2"] <= m["pgd_linf_acc@0.2"]  # PGD with twice the steps ran there too
    assert result.info["best_known"]["robust_linf_acc@0.2"] == ["pgd", "pgd_doubled"]
    flags = {f["flag"]: f["reason"] for f in result.info["reliability"]["flags"]}
    assert "cheap_attack_only" in flags and "evaluate.autoattack" in flags["cheap_attack_only"]
    assert m["reliability_flags"] == len(flags) and result.info["reliability"]["unreliable"] is True
    masks = result.robust_masks()
    for name in ("robust_linf_acc@0.05", "robust_linf_acc@0.2", "pgd_linf_acc@0.05"):
        assert float(masks[name].float().mean()) == m[name] and len(masks[name]) == 60


def test_a_job_with_the_suite_takes_the_per_sample_minimum():
    evaluate = {
        "gaussian": None,
        "pgd": {"norm": ["Linf", "L2"], "eps": [0.1], "steps": 10},
        "autoattack": {"norm": ["Linf", "L2"], "eps": [0.1], "steps": 10, "queries": 50},
    }
    result = run_job(JobSpec.model_validate(SPEC | {"evaluate": evaluate}))
    m, info = result.metrics, result.info
    for norm in ("linf", "l2"):
        best = m[f"robust_{norm}_acc@0.1"]
        assert best <= min(m[f"pgd_{norm}_acc@0.1"], m[f"autoattack_{norm}_acc@0.1"]) <= m["clean_acc"]
        masks = result.robust_masks()
        both = masks[f"pgd_{norm}_acc@0.1"] & masks[f"autoattack_{norm}_acc@0.1"]
        assert torch.equal(masks[f"robust_{norm}_acc@0.1"], both & masks[f"pgd_doubled_{norm}_acc@0.1"])
    assert info["autoattack"]["Linf"]["protocol"] == "custom"  # 10 steps: not the standard suite
    assert "cheap_attack_only" not in {f["flag"] for f in info["reliability"]["flags"]}
    assert {"cheap_attack_overstates", "no_chance_at_large_eps"} <= set(info["reliability"]["checked"])
    assert info["sanity"]["robust_l2_acc@0.1<=pgd_l2_acc@0.1"] is True
    _, stored = unpack_outcomes(info["outcomes"])  # what the CI gate pairs: every attack figure and the best known
    for name in ("robust_linf_acc@0.1", "pgd_l2_acc@0.1", "autoattack_l2_acc@0.1"):
        assert stored[name].tolist() == result.robust_masks()[name].tolist()
    assert not any(name.startswith("pgd_doubled") for name in stored)


def test_the_suite_with_fewer_than_10_steps_is_rejected():
    base = SPEC | {"evaluate": {"autoattack": {"eps": [0.1], "steps": 9}}}
    with pytest.raises(ValidationError, match="at least 10 iterations") as caught:
        JobSpec.model_validate(base)
    assert caught.value.errors()[0]["loc"] == ("evaluate", "autoattack", "steps")
    spec = JobSpec.model_validate(SPEC | {"evaluate": {"autoattack": {"eps": [0.1]}}})
    a = spec.evaluate.autoattack
    assert (tuple(a.attacks), a.steps, a.queries, a.restarts, a.sanity) == (STANDARD, 100, 5000, 1, True)
