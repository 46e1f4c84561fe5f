"""Randomized smoothing (evaluation.smoothing): CERTIFY and PREDICT against closed forms, the confidence bounds
against scipy's own definitions, reproducibility to the bit, soundness under a Monte-Carlo PGD attack on the
smoothed classifier, the sanity relation, and real jobs through the registry."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.stats import binom, binomtest, norm
from service_helpers import tiny_spec

from core import metrics
from core.budget import eval_passes
from core.spec import MAX_SMOOTHING_SAMPLES, JobSpec
from evaluation import registry
from evaluation.datasets import load_dataset
from evaluation.outcomes import unpack_outcomes
from evaluation.registry import CLASSIFICATION, Context, register_evaluation
from evaluation.runner import SanityCheckFailed, check_sanity, run_job
from evaluation.smoothadv import smoothadv_pgd
from evaluation.smoothing import (
    ABSTAIN,
    ESTIMATION,
    SELECTION,
    binomial_p_value,
    certify,
    class_counts,
    clopper_pearson_lower,
    max_radius,
    predict,
    smoothed_predict,
    smoothing_accuracy,
)
from evaluation.training import gaussian_augmentation

SMOOTHING = {"sigmas": [0.12, 0.25], "eps": [0.05, 0.1, 2.0], "n0": 20, "n": 400, "batch": 256}


def linear_classifier(w: tuple[float, float], b: float) -> torch.nn.Linear:
    """Two classes with logits (0, w·x + b): class 1 exactly where w·x + b > 0. Under x + N(0, σ²I) it is class 1
    with probability Φ((w·x + b)/(σ‖w‖)), so the smoothed classifier is the same half-plane and the exact
    certified radius is the distance to the boundary (Cohen et al., section 3.1 on linear base classifiers)."""
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0.0], list(w)]))
        model.bias.copy_(torch.tensor([0.0, b]))
    return model.eval()


# ------------------------------------------------------------------------------------------ confidence bounds
@pytest.mark.parametrize("alpha", [0.001, 0.01, 0.05])
def test_clopper_pearson_is_scipys_exact_interval_and_inverts_the_binomial_tail(alpha: float) -> None:
    n = 137
    k = np.arange(0, n + 1)
    lower = clopper_pearson_lower(k, n, alpha)
    # scipy's own Clopper–Pearson ("exact") interval: a two-sided 1 − 2α interval has the one-sided bound as its low end
    assert np.allclose(lower, [binomtest(int(i), n).proportion_ci(1 - 2 * alpha, "exact").low for i in k], atol=1e-12)
    # the defining property: P(Bin(n, p_L) ≥ k) = α for k ≥ 1
    assert np.allclose(binom.sf(k[1:] - 1, n, lower[1:]), alpha, rtol=1e-6)
    assert lower[0] == 0.0 and math.isclose(lower[-1], alpha ** (1 / n), rel_tol=1e-12)
    assert np.all(np.diff(lower) > 0)


def test_binomial_p_value_is_scipys_two_sided_test() -> None:
    rng = np.random.default_rng(0)
    n_a, n_b = rng.integers(0, 60, size=(2, 50))
    expected = [binomtest(int(a), int(a + b), 0.5).pvalue if a + b else 1.0 for a, b in zip(n_a, n_b, strict=True)]
    assert np.array_equal(binomial_p_value(n_a, n_b), expected)


# ------------------------------------------------------------------------------------------ CERTIFY, PREDICT
def test_certify_and_predict_on_a_linear_classifier_match_the_closed_form() -> None:
    w, b, sigma, n, alpha = (0.6, 0.8), -0.1, 0.25, 10_000, 0.001  # ‖w‖ = 1: w·x + b is the signed distance
    model = linear_classifier(w, b)
    distance = torch.tensor([0.3, -0.3, 0.05, 0.0, 2.0, -0.6], dtype=torch.float64)
    x = (distance + 0.1)[:, None] * torch.tensor([w], dtype=torch.float64)  # points along w at those distances
    x = x.float()
    c_hat, radius, counts = certify(model, x, [sigma], n0=100, n=n, alpha=alpha, batch=1000, seed=3)
    c_hat, radius, counts = c_hat[0], radius[0], counts[0]
    side = (distance > 0).long().numpy()
    p_true = norm.cdf(np.abs(distance.numpy()) / sigma)  # P(f(x + δ) = side of x)

    on_side = counts[np.arange(len(x)), side].numpy()
    assert np.all(np.abs(on_side / n - p_true) <= 5 * np.sqrt(p_true * (1 - p_true) / n) + 1e-12)
    # each radius is the paper's formula of the counts, sound (below the exact radius |d|) and close to it
    certified = c_hat != ABSTAIN
    assert np.array_equal(certified, [True, True, True, False, True, True])  # the point on the boundary abstains
    assert np.array_equal(c_hat[certified], side[certified])
    expected = sigma * norm.ppf(clopper_pearson_lower(on_side, n, alpha))
    assert np.allclose(radius[certified], expected[certified], rtol=1e-12)
    assert np.all(radius[certified] < np.abs(distance.numpy()[certified]))
    # the far point: every draw agrees, so its radius is the largest n draws can certify, σ·Φ⁻¹(α^(1/n))
    assert on_side[4] == n and radius[4] == pytest.approx(max_radius(sigma, n, alpha), rel=1e-12)
    assert radius[4] == pytest.approx(sigma * norm.ppf(alpha ** (1 / n)), rel=1e-12)
    assert radius[0] > 0.3 - 0.03 and radius[5] > 0.6 - 0.05  # within the Monte-Carlo error of the exact radius
    # PREDICT: the true side, abstaining on the boundary
    predicted = predict(counts, alpha)
    assert np.array_equal(predicted[[0, 1, 2, 4, 5]], side[[0, 1, 2, 4, 5]]) and predicted[3] == ABSTAIN


def test_certify_abstains_when_the_lower_bound_is_at_most_one_half() -> None:
    """A point whose true p_A is barely above ½: the bound of n draws stays ≤ ½, so CERTIFY abstains; with many
    more draws it certifies a small radius."""
    model, sigma = linear_classifier((1.0, 0.0), 0.0), 0.5
    x = torch.tensor([[0.01, 0.0]])  # p_A = Φ(0.02) ≈ 0.508
    few, _, _ = certify(model, x, [sigma], 10, 200, 0.001, 1000)
    many, radius, _ = certify(model, x, [sigma], 100, 100_000, 0.001, 10_000)
    assert few[0, 0] == ABSTAIN and many[0, 0] == 1 and 0 < radius[0, 0] < 0.01


def test_selection_and_estimation_draw_different_noise() -> None:
    model, x = linear_classifier((1.0, 0.0), 0.0), torch.zeros(3, 2)
    selection = class_counts(model, x, [1.0], 500, 64, 0, SELECTION, 2)
    estimation = class_counts(model, x, [1.0], 500, 64, 0, ESTIMATION, 2)
    assert selection.sum() == estimation.sum() == 3 * 500 and not torch.equal(selection, estimation)


# ------------------------------------------------------------------------------------------ reproducibility
def test_counts_are_bitwise_reproducible_and_do_not_depend_on_the_batch() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).eval()
    x = torch.randn(7, 2)
    runs = [class_counts(model, x, [0.1, 0.5], 1500, batch, 5, ESTIMATION, 3) for batch in (1, 100, 1024, 20_000)]
    assert all(torch.equal(runs[0], r) for r in runs[1:])
    assert runs[0].sum(dim=2).eq(1500).all() and not torch.equal(runs[0][0], runs[0][1])
    other_seed = class_counts(model, x, [0.1, 0.5], 1500, 100, 6, ESTIMATION, 3)
    assert not torch.equal(runs[0], other_seed)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    first, first_info = smoothing_accuracy(model, x, y, [0.25], [0.1], 50, 500, 0.01, 64, seed=1)
    again, again_info = smoothing_accuracy(model, x, y, [0.25], [0.1], 50, 500, 0.01, 999, seed=1)
    assert first == again and first_info["sigmas"] == again_info["sigmas"]


# ------------------------------------------------------------------------------------------ soundness
def test_no_certified_sample_is_flipped_by_smoothadv_pgd_on_the_smoothed_classifier_at_09_r() -> None:
    """Every test point certified at radius r: SmoothAdv's Monte-Carlo PGD on g (Salman et al. 2019) moves it by
    0.9·r, and PREDICT with fresh draws never returns another class there. The attack is not toothless: at 2·r
    it flips a large share of the same points, far more than random directions of the same length."""
    sigma = 0.12
    spec = JobSpec.model_validate(
        tiny_spec(
            "smoothing-soundness",
            model={"family": "explicit", "width": 16, "depth": 4, "h": 0.3},
            train={"epochs": 150, "lr": 0.02, "noise_sigma": sigma},
            evaluate={"gaussian": None},
        )
    )
    model = run_job(spec).model.eval()
    data = load_dataset(spec.dataset)
    x, y = data.x_test, data.y_test
    c_hat, radius, _ = certify(model, x, [sigma], 50, 2000, 0.001, 4096, seed=0)
    certified = (c_hat[0] == y.numpy()) & (radius[0] > 0)
    assert certified.sum() >= 40, "too few certified points for the test to mean anything"
    xs, ys = x[certified], y[certified]
    r = torch.from_numpy(radius[0][certified]).float()

    def flipped(points: torch.Tensor) -> np.ndarray:
        found = smoothed_predict(model, points, sigma, 2000, 0.001, 4096, seed=1)
        return (found != ABSTAIN) & (found != ys.numpy())

    near = smoothadv_pgd(model, xs, ys, sigma, 0.9 * r, steps=40, samples=32)
    assert torch.all((near - xs).norm(dim=1) <= 0.9 * r * (1 + 1e-5))
    assert not flipped(near).any()
    far = smoothadv_pgd(model, xs, ys, sigma, 2 * r, steps=40, samples=32)
    direction = torch.randn(xs.shape, generator=torch.Generator().manual_seed(0))
    random = xs + direction / direction.norm(dim=1, keepdim=True) * (2 * r)[:, None]
    assert flipped(far).mean() >= 0.3 and flipped(far).sum() >= 3 * flipped(random).sum()


# ------------------------------------------------------------------------------------------ sanity relation
def test_the_sanity_relation_smoothed_certified_at_most_smoothed_clean() -> None:
    good = {"clean_acc": 0.9, "smoothed_clean_acc@0.25": 0.8, "smoothed_certified_l2_acc_sigma0.25@0.1": 0.7}
    assert check_sanity(good)["smoothed_certified_l2_acc_sigma0.25@0.1<=smoothed_clean_acc@0.25"]
    with pytest.raises(SanityCheckFailed, match=r"smoothed_certified_l2_acc_sigma0.25@0.1<=smoothed_clean_acc@0.25"):
        check_sanity({**good, "smoothed_certified_l2_acc_sigma0.25@0.1": 0.85})


def test_a_job_breaking_the_smoothing_relation_fails_and_stores_nothing(tmp_path: Path, monkeypatch) -> None:
    """An evaluation after smoothing that corrupts its certified accuracy (a stand-in for a bug) makes the real job
    fail, and nothing is written where the results would go."""
    monkeypatch.setattr(registry, "_REGISTERED", dict(registry._REGISTERED))

    @register_evaluation("corrupt_smoothing", CLASSIFICATION, position=99, wanted=lambda ctx: True)
    def corrupt(ctx: Context) -> None:
        name = metrics.metric_key("smoothed_certified_l2_acc", 0.05, param=0.12)
        ctx.metrics[name] = ctx.metrics[metrics.metric_key("smoothed_clean_acc", 0.12)] + 0.01

    spec = tiny_spec("smoothing-sanity", train={"epochs": 5, "lr": 0.02})
    spec["evaluate"] = {"smoothing": SMOOTHING}
    out = tmp_path / "out"
    with pytest.raises(SanityCheckFailed, match="smoothed_certified_l2_acc_sigma0.12@0.05<=smoothed_clean_acc@0.12"):
        run_job(JobSpec.model_validate(spec), out_dir=out)
    assert not (out / "result.json").exists() and not (out / "model.safetensors").exists()


# ------------------------------------------------------------------------------------------ real jobs
def test_a_real_job_reports_smoothing_metrics_the_catalog_describes(tmp_path: Path) -> None:
    spec = tiny_spec("smoothing-job", train={"epochs": 20, "lr": 0.02, "noise_sigma": 0.12})
    spec["evaluate"] = {"certified": {"eps": [0.05, 0.1]}, "smoothing": SMOOTHING}
    result = run_job(JobSpec.model_validate(spec), out_dir=tmp_path)
    m = result.metrics
    smoothed = sorted(n for n in m if n.startswith("smoothed_"))
    assert len(smoothed) == 2 * (3 + 2 + 5)  # per σ: 3 ε, clean and abstain, 5 radius quantiles
    assert not [n for n in m if metrics.kind_info(n) is None], "metrics missing from the catalog"
    assert metrics.label("smoothed_certified_l2_acc_sigma0.25@0.1") == "smoothed cert. L2 σ=0.25 ε=0.1"
    for sigma in (0.12, 0.25):
        assert m[f"smoothed_certified_l2_acc_sigma{sigma:g}@0.1"] <= m[f"smoothed_clean_acc@{sigma:g}"]
        assert m[f"smoothed_certified_l2_acc_sigma{sigma:g}@2"] == 0.0  # beyond σ·Φ⁻¹(α^(1/n)): none
    assert m["smoothed_certified_l2_acc_sigma0.12@0.05"] > 0.3
    warnings = [w for w in result.info["warnings"] if "cannot be certified" in w]
    assert len(warnings) == 2 and all("ε = 2 " in w for w in warnings)
    assert result.info["smoothing"]["sigmas"]["0.25"]["max_radius"] == pytest.approx(max_radius(0.25, 400, 0.001))
    # per-sample outcomes for the CI gate: each mean is the metric
    _, masks = unpack_outcomes(result.info["outcomes"])
    for name in (n for n in smoothed if "radius" not in n):
        assert masks[name].shape == (100,) and masks[name].mean() == pytest.approx(m[name], abs=1e-6), name
    stored = json.loads((tmp_path / "result.json").read_text())
    assert stored["metrics"] == pytest.approx(m) and "plot_eps.png" in stored["info"]["plots"]
    # the job is seeded: the same spec gives the same numbers, bit for bit
    again = run_job(JobSpec.model_validate(spec)).metrics
    assert {k: v for k, v in again.items() if not metrics.is_timing(k)} == {
        k: v for k, v in m.items() if not metrics.is_timing(k)
    }


def test_noise_sigma_trains_on_fresh_gaussian_copies_and_stays_reproducible() -> None:
    draws = gaussian_augmentation(torch.zeros(20_000, 2), 0.3, torch.Generator().manual_seed(0))
    assert draws.std().item() == pytest.approx(0.3, rel=0.02) and draws.mean().abs().item() < 0.01

    def loss(noise_sigma: float) -> float:
        spec = tiny_spec("noise", train={"epochs": 5, "lr": 0.02, "noise_sigma": noise_sigma}, evaluate={})
        return run_job(JobSpec.model_validate(spec)).metrics["train_loss"]

    assert loss(0.3) == loss(0.3) != loss(0.0)


# ------------------------------------------------------------------------------------------ spec
@pytest.mark.parametrize(
    ("smoothing", "field"),
    [
        ({"sigmas": [0.0]}, "sigmas"),
        ({"sigmas": [-0.1]}, "sigmas"),
        ({"n0": 500, "n": 100}, "n0"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"n": MAX_SMOOTHING_SAMPLES + 1}, "n"),
        ({"batch": 0}, "batch"),
        ({"eps": []}, "eps"),
    ],
)
def test_bad_smoothing_options_name_the_field(smoothing: dict, field: str) -> None:
    spec = tiny_spec("bad")
    spec["evaluate"] = {"smoothing": {"eps": [0.1]} | smoothing}
    with pytest.raises(ValidationError) as error:
        JobSpec.model_validate(spec)
    locations = [e["loc"] for e in error.value.errors()]
    assert any(loc[:3] == ("evaluate", "smoothing", field) for loc in locations), locations


@pytest.mark.parametrize("dataset", [{"name": "sine"}, {"name": "digits_denoising", "noise": 0.1}])
def test_smoothing_is_for_classification_only(dataset: dict) -> None:
    spec = tiny_spec("regression", dataset={**dataset, "n_train": 20, "n_test": 20})
    spec["evaluate"] = {"smoothing": {"eps": [0.1]}}
    with pytest.raises(ValidationError, match="evaluate.smoothing needs task 'classification'"):
        JobSpec.model_validate(spec)


def test_new_options_leave_old_spec_hashes_alone_and_count_in_the_budget() -> None:
    plain = JobSpec.model_validate(tiny_spec("hash"))
    explicit_defaults = tiny_spec("hash")
    explicit_defaults["train"] = {**explicit_defaults["train"], "noise_sigma": 0.0}
    explicit_defaults["evaluate"] = {**explicit_defaults["evaluate"], "smoothing": None}
    assert JobSpec.model_validate(explicit_defaults).spec_hash() == plain.spec_hash()
    noisy = tiny_spec("hash")
    noisy["train"] = {**noisy["train"], "noise_sigma": 0.25}
    assert JobSpec.model_validate(noisy).spec_hash() != plain.spec_hash()
    smoothed = tiny_spec("hash")
    smoothed["evaluate"] = {**smoothed["evaluate"], "smoothing": {"eps": [0.1], "sigmas": [0.1, 0.2]}}
    assert eval_passes(JobSpec.model_validate(smoothed)) == eval_passes(plain) + 2 * (100 + 10_000)
