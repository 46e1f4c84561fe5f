"""The AutoAttack-style ensemble (evaluation.autoattack): exact on a linear classifier, runs each attack only where
torchattacks supports the problem and says which ran, never beats clean accuracy, and lands in a job's result."""

import pytest
import torch

from core.spec import JobSpec
from evaluation.autoattack import ENSEMBLE, autoattack_accuracy, grid_shape, skip_reason
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
    assert settings["attacks"] == list(ENSEMBLE) and settings["skipped"] == {}  # 25 features: a 5×5 image
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
    assert settings["attacks"] == ["apgd-ce", "fab-t"]
    assert set(settings["skipped"]) == {"apgd-t", "square"} and "4 classes" in settings["skipped"]["apgd-t"]
    assert metrics["autoattack_linf_acc@1e-06"] == 1.0 and metrics["autoattack_linf_acc@0.3"] < 1.0


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
    assert result.info["autoattack"]["L2"]["attacks"] == list(ENSEMBLE)  # 10 classes, 8×8 images
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
