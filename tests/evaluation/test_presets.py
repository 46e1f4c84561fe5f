"""Presets under examples/: valid specs (sweep presets: every grid point), the Reshniak & Webster θ-sweep setting, and
the poster's trend on a small variant — robustness to Gaussian noise rises from θ = 0 (explicit Euler) to θ = 1
(implicit Euler)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from core.spec import JobSpec
from evaluation.runner import run_job
from evaluation.sweep import expand_grid, split_sweep

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SWEEP = "spirals-theta-sweep.json"
SWEEP_FULL = "spirals-theta-sweep-full.json"
DIGITS = {
    "digits-explicit.json": "explicit",
    "digits-implicit.json": "implicit",
    "digits-hamiltonian.json": "hamiltonian",
    "digits-lipschitz.json": "lipschitz",
}
THETAS = [0, 0.25, 0.5, 0.75, 1]


def load(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


@pytest.mark.parametrize("name", [SWEEP, SWEEP_FULL, *DIGITS])
def test_preset_is_valid_at_every_grid_point(name: str) -> None:
    base, axes = split_sweep(load(name))
    points = expand_grid(base, axes)
    assert points and all(isinstance(p.spec, JobSpec) for p in points)
    assert len({p.name for p in points}) == len(points)


def test_theta_sweep_presets_follow_reshniak_webster() -> None:
    small, full = load(SWEEP), load(SWEEP_FULL)
    for data in (small, full):
        assert data["sweep"] == {"model.theta": THETAS}
        spec = JobSpec.model_validate(split_sweep(data)[0])
        # 200 points on two spirals, every other point held out (Example 2)
        assert (spec.dataset.name, spec.dataset.n_train, spec.dataset.n_test) == ("spirals", 100, 100)
        assert spec.model.family == "implicit" and spec.train.regularizers.stochastic is not None
        assert spec.model.depth * spec.model.h == pytest.approx(10.0)  # t ∈ [0, 10]
        assert spec.evaluate.gaussian.sigmas == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]  # the poster's noise levels
    assert JobSpec.model_validate(split_sweep(full)[0]).model.depth == 100  # "ResNet with 100 layers"
    assert full["device"] == "cuda" and small["device"] == "auto"
    assert full["dataset"] == small["dataset"]


@pytest.mark.parametrize(("name", "family"), DIGITS.items())
def test_digits_presets_cover_every_family(name: str, family: str) -> None:
    spec = JobSpec.model_validate(load(name))
    assert spec.dataset.name == "digits" and spec.model.family == family
    assert spec.evaluate.pgd is not None and spec.evaluate.certified is not None


def small_variant(theta: float, seed: int = 0) -> JobSpec:
    """The θ sweep preset with Gaussian noise only: width 8, 20 layers of h = 0.5 (t ∈ [0, 10]), 200 epochs, its
    R_rnd (eq. 10, weight 0.003).

    At this size the effect of θ is small but consistent: on train seeds 0, 1, 2 accuracy at σ = 0.3 is higher for
    θ = 1 than for θ = 0 every time, by 2.5, 0.2 and 0.7 points (at σ = 0.5: +1.6, −0.5, +0.3). Both sit near the
    data's nearest-arm ceiling (README, "Seed experiments").
    """
    data = copy.deepcopy(split_sweep(load(SWEEP))[0])
    data["name"] = f"theta-trend-{theta:g}"
    data["model"].update({"width": 8, "depth": 20, "h": 0.5, "theta": theta})
    data["train"].update({"epochs": 200, "lr": 0.02, "seed": seed})
    data["evaluate"] = {"gaussian": {"sigmas": [0.0, 0.3, 0.5], "repeats": 10, "seed": 0}}
    data["device"] = "cpu"
    return JobSpec.model_validate(data)


def test_robustness_to_gaussian_noise_rises_from_explicit_to_implicit_euler() -> None:
    """The table of Reshniak & Webster's poster: accuracy under Gaussian noise grows with θ (σ = 0.3: 78.5 % at θ = 0,
    94.2 % at θ = 1)."""
    explicit = run_job(small_variant(0.0)).metrics
    implicit = run_job(small_variant(1.0)).metrics
    assert explicit["clean_acc"] >= 0.95 and implicit["clean_acc"] >= 0.95  # both learned the spirals
    assert implicit["gaussian_acc@0.3"] > explicit["gaussian_acc@0.3"], (explicit, implicit)
