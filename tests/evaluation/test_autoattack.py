"""The strong attack suite (evaluation.autoattack): exact on a linear classifier, runs each attack only where it
applies and says which ran (with every torchattacks setting), never beats clean accuracy, and lands in a job's
result."""

import pytest
import torch

from core.spec import JobSpec
from evaluation.autoattack import STANDARD, autoattack_accuracy, grid_shape, skip_reason, square_layout
from evaluation.runner import run_job
from tests.evaluation.test_robustness import LinearClassifier, exact_linear_radius

FAST = {"steps": 30, "queries": 200}


def test_linear_classifier_gets_the_exact_l2_robust_accuracy():
    torch.manual_seed(0)
    model = LinearClassifier(torch.randn(5, 25), torch.randn(5))
    x = 2.0 * torch.randn(200, 25)  # unbounded data: exercises the attack box
    with torch.no_grad():
        y = model(x).argmax(1)
        y[:20] = (y[:20] + 1) % 5  # some misclassified points
    exact = exact_linear_radius(model, x, y).detach()
    eps_list = [0.2, 0.5, 1.0]
    metrics, settings = autoattack_accuracy(model, x, y, "L2", eps_list, n_classes=5, **FAST)
    # 5 classes, 25 features (a 5×5 image): everything but the 2-class margin attack
    assert settings["attacks"] == ["apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square"]
    assert set(settings["skipped"]) == {"apgd-cw"}
    for eps in eps_list:
        truth = float((exact > eps).float().mean())
        assert truth <= metrics[f"autoattack_l2_acc@{eps:g}"] <= truth + 2 / len(x)
    flipped = settings["eps"]["1"]["flipped"]
    assert flipped["apgd-ce"] > 0


def test_each_attack_runs_only_where_torchattacks_supports_the_shape():
    assert grid_shape(64) == (8, 8) and grid_shape(2) == (1, 2) and grid_shape(12) == (3, 4)
    assert skip_reason("apgd-t", "Linf", 2, 64) and skip_reason("apgd-t", "Linf", 10, 64) is None
    assert skip_reason("square", "Linf", 10, 2) and skip_reason("square", "Linf", 10, 4) is None
    assert skip_reason("square", "L2", 10, 16) and skip_reason("square", "L2", 10, 64) is None
    torch.manual_seed(0)
    model = LinearClassifier(torch.randn(2, 2), torch.randn(2))  # spirals-like: 2 features, 2 classes
    x = torch.randn(60, 2)
    with torch.no_grad():
        y = model(x).argmax(1)
    metrics, settings = autoattack_accuracy(model, x, y, "Linf", [1e-6, 0.3], n_classes=2, **FAST)
    assert settings["attacks"] == ["apgd-ce", "apgd-cw", "fab-t"]  # 2 classes: the Carlini–Wagner margin, not DLR
    assert set(settings["skipped"]) == {"apgd-dlr", "apgd-t", "square"}
    assert "4 classes" in settings["skipped"]["apgd-t"]
    assert "3 classes" in settings["skipped"]["apgd-dlr"]
    assert metrics["autoattack_linf_acc@1e-06"] == 1.0 and metrics["autoattack_linf_acc@0.3"] < 1.0


def test_square_attacks_images_as_images():
    """Image samples (C, H, W) reach Square as they are; flat features whose grid is too far from square for
    Square's first square are skipped with the reason (torchattacks would index past the image: a crash)."""
    assert square_layout((3, 8, 8)) == (3, 8, 8) and square_layout((192,)) == (1, 12, 16)
    assert "does not fit in the 12×16 layout" in skip_reason("square", "L2", 3, 192, square_layout((192,)))
    assert skip_reason("square", "L2", 3, 192, (3, 8, 8)) is None
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 3))
    x = torch.rand(24, 3, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    metrics, settings = autoattack_accuracy(
        model, x, y, "L2", [0.05, 3.0], n_classes=3, attacks=("square",), queries=100, valid_range=(0.0, 1.0)
    )
    assert settings["attacks"] == ["square"] and metrics["autoattack_l2_acc@0.05"] >= metrics["autoattack_l2_acc@3"]
    assert metrics["autoattack_l2_acc@3"] < 1.0  # the random search finds adversarial images


def test_a_job_reports_the_ensemble_and_keeps_the_sanity_relations(tmp_path):
    spec = JobSpec.model_validate(
        {
            "name": "aa",
            "dataset": {"name": "digits", "n_train": 200, "n_test": 60},
            "model": {"family": "lipschitz", "width": 16, "depth": 2},
            "train": {"epochs": 3, "lr": 0.01, "logit_scale": 10.0},
            "evaluate": {
                "gaussian": None,
                "pgd": {"norm": ["L2"], "eps": [0.3], "steps": 10},
                "autoattack": {"norm": ["Linf", "L2"], "eps": [0.05, 0.3], **FAST},
                "certified": {"eps": [0.05, 0.3]},
            },
        }
    )
    result = run_job(spec, tmp_path)
    m = result.metrics
    for eps in ("0.05", "0.3"):
        assert m[f"certified_l2_acc@{eps}"] <= m[f"autoattack_l2_acc@{eps}"] <= m["clean_acc"]
        assert m[f"autoattack_linf_acc@{eps}"] <= m["clean_acc"]
    assert result.info["autoattack"]["L2"]["attacks"] == [a for a in STANDARD if a != "apgd-cw"]  # 10 classes, 8×8
    assert result.info["sanity"]["certified_l2_acc@0.3<=autoattack_l2_acc"] is True
    assert (tmp_path / "plot_eps.png").exists()


def test_autoattack_needs_a_classification_task():
    with pytest.raises(ValueError, match="evaluate.autoattack needs task 'classification'"):
        JobSpec.model_validate(
            {
                "name": "aa-sine",
                "dataset": {"name": "sine"},
                "model": {"family": "explicit", "width": 4, "depth": 2, "h": 0.1},
                "evaluate": {"autoattack": {"eps": [0.1]}},
            }
        )
