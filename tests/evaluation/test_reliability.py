"""Reliability flags (evaluation.reliability): raised on models that really mask gradients or whose solver really
fails under attack, and on each sign the issue lists; silent on a sound evaluation."""

from __future__ import annotations

import torch
from torch import nn

from core.spec import EvaluateSpec, JobSpec, PGDEval
from evaluation.best_known import attack_classifier
from evaluation.reliability import reliability_flags
from evaluation.runner import run_job


class Quantized(nn.Module):
    """A linear classifier on the input rounded to a grid of step ½: every input gradient is zero (gradient
    masking), yet small perturbations that cross a rounding threshold change the class."""

    def __init__(self, classes: int, features: int):
        super().__init__()
        self.head = nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.round(x.flatten(1) * 2) / 2)


def masked_problem():
    torch.manual_seed(0)
    model = Quantized(4, 16)  # 16 features: a 4×4 image, so Square runs
    x = torch.rand(80, 16)
    with torch.no_grad():
        logits = model(x)
    return model, x, logits.argmax(1), logits


def attack(ev: dict, model, x, y, logits):
    spec = EvaluateSpec.model_validate({"gaussian": None} | ev)
    return attack_classifier(model, x, y, spec, 4, (0.0, 1.0), logits, lambda _event: None)


def flags_of(info: dict) -> dict[str, str]:
    return {f["flag"]: f["reason"] for f in info["reliability"]["flags"]}


def test_gradient_masking_is_flagged_and_the_black_box_attack_sets_the_headline():
    model, x, y, logits = masked_problem()
    ev = {
        "pgd": {"norm": ["Linf"], "eps": [0.2], "steps": 10},
        "autoattack": {"norm": ["Linf"], "eps": [0.2], "steps": 10, "queries": 200},
    }
    metrics, info, masks = attack(ev, model, x, y, logits)
    flags = flags_of(info)
    assert "black_box_beats_gradient" in flags and "Linf ε=0.2" in flags["black_box_beats_gradient"]
    assert "cheap_attack_overstates" in flags  # PGD's zero gradients leave it far above the suite
    assert metrics["robust_linf_acc@0.2"] < metrics["pgd_linf_acc@0.2"] - 0.01
    square = info["autoattack"]["Linf"]["eps"]["0.2"]["flipped"]["square"]
    assert square >= 0.01 * len(x)


def test_a_model_the_attacks_cannot_move_does_not_reach_chance_and_is_flagged():
    model, x, y, logits = masked_problem()
    # FAB alone follows the (zero) gradients only: even at the whole data range it flips nothing
    ev = {"autoattack": {"norm": ["Linf"], "eps": [0.1], "steps": 10, "attacks": ["fab-t"]}}
    _, info, _ = attack(ev, model, x, y, logits)
    assert info["autoattack"]["Linf"]["sanity"]["eps"] == 1.0
    assert "no_chance_at_large_eps" in flags_of(info)
    # the full suite (Square included) brings the same model to chance: no flag
    ev = {"autoattack": {"norm": ["Linf"], "eps": [0.1], "steps": 10, "queries": 200}}
    _, info, _ = attack(ev, model, x, y, logits)
    assert "no_chance_at_large_eps" not in flags_of(info)
    assert info["autoattack"]["Linf"]["sanity"]["acc"] <= float(torch.bincount(y).max()) / len(y)


def test_an_implicit_solver_that_does_not_converge_under_attack_is_flagged():
    spec = JobSpec.model_validate(
        {
            "name": "unconverged",
            "dataset": {"name": "spirals", "n_train": 60, "n_test": 40},
            "model": {"family": "implicit", "width": 8, "depth": 2, "h": 0.5, "theta": 1.0,
                      "solver": {"forward": "fixed_point", "backward": "neumann", "tol": 1e-12, "max_iter": 2}},
            "train": {"epochs": 2},
            "evaluate": {"gaussian": None, "pgd": {"norm": ["Linf"], "eps": [0.1], "steps": 3}},
        }
    )  # fmt: skip
    result = run_job(spec)
    reason = flags_of(result.info)["solver_unconverged_under_attack"]
    assert "forward" in reason and not reason.startswith("0 forward")


def test_each_sign_in_the_numbers_is_flagged_with_its_reason():
    pgd = PGDEval(norm=["Linf"], eps=[0.1, 0.2], steps=10)
    metrics = {
        "pgd_linf_acc@0.1": 0.50, "pgd_linf_acc@0.2": 0.55,  # rises with ε
        "robust_linf_acc@0.1": 0.50, "robust_linf_acc@0.2": 0.40,
    }  # fmt: skip
    out = reliability_flags(metrics, {}, {}, {}, {"Linf": (0.2, 0.60)}, pgd, {"forward": 0, "backward": 3}, 0.5)
    flags = {f["flag"]: f["reason"] for f in out["flags"]}
    assert set(flags) == {"cheap_attack_only", "not_monotone_in_eps", "solver_unconverged_under_attack",
                          "pgd_rises_with_steps"}  # fmt: skip
    assert "pgd_linf_acc rises from 50.0 % at ε=0.1 to 55.0 % at ε=0.2" in flags["not_monotone_in_eps"]
    assert "55.0 % with 10 steps, 60.0 % with 20" in flags["pgd_rises_with_steps"]
    assert flags["solver_unconverged_under_attack"].startswith("0 forward and 3 backward")
    assert out["unreliable"] is True
    sound = {"robust_linf_acc@0.1": 0.5, "robust_linf_acc@0.2": 0.4}
    assert reliability_flags(sound, {}, {}, {}, {}, None, {"forward": 0, "backward": 0}, 0.5)["flags"] == []
