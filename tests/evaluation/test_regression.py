"""Regression and denoising tasks: the datasets are seeded and right, MSE/PSNR match a hand computation, PGD finds
errors at least as large as clean and random ones, the certified output bound survives a strong attack, and each
new task runs end to end, twice the same."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from core import metrics
from core.spec import JobSpec, ModelSpec
from evaluation import datasets
from evaluation.pgd import SquaredErrorLogits, attack_box, pgd_regression
from evaluation.pnp import blur_operator, convergence_guarantee, plug_and_play
from evaluation.regression import (
    MAX_PSNR,
    certified_regression,
    clean_metrics,
    gaussian_noise_regression,
    mse,
    psnr,
    rollout_mse,
)
from evaluation.runner import SanityCheckFailed, check_sanity, run_job
from evaluation.training import train_classifier
from models import build_model, lipschitz_bound


# ---------------------------------------------------------------------------------------------------- datasets
def test_sine_is_the_reshniak_webster_setting():
    data = datasets.sine(n_train=51, n_test=50)
    assert data.task == "regression" and data.output_dim == 1 and data.input_dim == 1 and data.valid_range is None
    assert data.x_train.shape == (51, 1) and data.y_train.shape == (51, 1) and data.x_test.shape == (50, 1)
    assert torch.allclose(data.x_train[[0, 25, 50], 0], torch.tensor([-5.0, 0.0, 5.0]))
    midpoints = (data.x_train[:-1] + data.x_train[1:]) / 2  # test points: midway between training points
    assert torch.allclose(data.x_test, midpoints, atol=1e-6)
    x = data.x_test.double()
    assert torch.allclose(data.y_test.double(), torch.sin(x) + 0.1 * torch.cos(19 * x), atol=1e-6)
    assert data.peak == pytest.approx(float(data.y_train.max() - data.y_train.min()))
    noisy, again = datasets.sine(seed=3, noise=0.1), datasets.sine(seed=3, noise=0.1)
    assert torch.equal(noisy.y_train, again.y_train) and not torch.equal(noisy.y_train, data.y_train)
    assert torch.equal(noisy.x_train, data.x_train) and torch.equal(noisy.y_test, data.y_test)  # noise: targets only


def lv_invariant(z: torch.Tensor) -> torch.Tensor:
    """V = z₁ − ln z₁ + 4/3·z₂ − 2/3·ln z₂, conserved by ż₁ = 2/3·z₁ − 4/3·z₁z₂, ż₂ = z₁z₂ − z₂."""
    z = z.double()
    return z[:, 0] - torch.log(z[:, 0]) + 4 / 3 * z[:, 1] - 2 / 3 * torch.log(z[:, 1])


def rk4_flow(z: np.ndarray, t: float, steps: int = 2000) -> np.ndarray:
    """An independent integrator: classical RK4 with a small fixed step."""
    f = lambda v: np.array(datasets.lotka_volterra_field(0.0, v))  # noqa: E731
    h = t / steps
    for _ in range(steps):
        k1 = f(z)
        k2 = f(z + h / 2 * k1)
        k3 = f(z + h / 2 * k2)
        k4 = f(z + h * k3)
        z = z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return z


def test_lotka_volterra_pairs_follow_the_flow():
    data = datasets.lotka_volterra(n_train=120, n_test=60, seed=0)
    assert data.task == "regression" and data.output_dim == 2
    assert data.x_train.shape == (120, 2) and data.y_test.shape == (60, 2)
    assert data.trajectories.shape == (2, 51, 2)  # ⌈60/50⌉ test trajectories of 50 steps
    assert torch.equal(data.x_train[1:50], data.y_train[:49])  # consecutive pairs of one trajectory
    assert torch.equal(data.x_test[:50], data.trajectories[0, :50]) and torch.equal(data.y_test[:50],
                                                                                    data.trajectories[0, 1:])
    for i in (0, 37, 119):  # the 0.2-flow map, against an independent RK4 integration (float32 data)
        expected = rk4_flow(data.x_train[i].double().numpy(), datasets.LV_DT)
        assert np.allclose(data.y_train[i].double().numpy(), expected, rtol=1e-6, atol=1e-6)
    drift = (lv_invariant(data.x_train) - lv_invariant(data.y_train)).abs().max()
    assert drift < 1e-5  # conserved along the orbit (up to float32 storage)
    assert ((data.x_train >= 0.05) & (data.x_train <= 5)).all()
    # seeded, and the test set does not depend on n_train
    again = datasets.lotka_volterra(n_train=500, n_test=60, seed=0)
    assert torch.equal(again.x_train[:120], data.x_train) and torch.equal(again.x_test, data.x_test)
    assert not torch.equal(datasets.lotka_volterra(n_train=120, n_test=60, seed=1).x_train, data.x_train)


def test_digits_denoising_and_completion():
    plain = datasets.digits(n_train=300, n_test=100, seed=2)
    noisy = datasets.digits_denoising(n_train=300, n_test=100, seed=2, noise=0.2)
    assert noisy.task == "denoising" and noisy.valid_range == (0.0, 1.0) and noisy.peak == 1.0
    assert noisy.output_dim == noisy.input_dim == 64
    assert torch.equal(noisy.y_test, plain.x_test) and torch.equal(noisy.y_train, plain.x_train)  # same split
    for x in (noisy.x_train, noisy.x_test):
        assert x.min() >= 0 and x.max() <= 1
    grey = (noisy.y_test >= 0.45) & (noisy.y_test <= 0.55)  # clipping needs |noise| > 2.25σ here: rare
    residual = (noisy.x_test - noisy.y_test)[grey]
    assert 0.18 < float(residual.std()) < 0.21 and abs(float(residual.mean())) < 0.03
    again = datasets.digits_denoising(n_train=300, n_test=100, seed=2, noise=0.2)
    assert torch.equal(again.x_train, noisy.x_train) and torch.equal(again.x_test, noisy.x_test)

    block = datasets.digits_completion(n_train=300, n_test=100, seed=2, mask="block", fraction=0.25)
    assert torch.equal(block.y_test, plain.x_test) and block.valid_range == (0.0, 1.0)
    changed = block.x_test != block.y_test
    assert (block.x_test[changed] == 0).all() and int(changed.sum(1).max()) <= 16  # a 4×4 block set to 0
    missing = datasets.completion_mask(50, 8, "block", 0.25, torch.Generator().manual_seed(0))
    assert (missing.sum(1) == 16).all()
    rows = missing.reshape(50, 8, 8).any(2).sum(1)
    assert (rows == 4).all()  # one contiguous 4×4 square
    pixels = datasets.completion_mask(50, 8, "pixels", 0.25, torch.Generator().manual_seed(0))
    assert (pixels.sum(1) == 16).all() and not torch.equal(pixels[0], pixels[1])
    again = datasets.digits_completion(n_train=300, n_test=100, seed=2, mask="block", fraction=0.25)
    assert torch.equal(again.x_train, block.x_train) and torch.equal(again.x_test, block.x_test)


# ---------------------------------------------------------------------------------------------------- spec
def job(dataset: dict, model: dict | None = None, **extra) -> dict:
    return {"name": "t", "dataset": dataset, "model": model or {"family": "explicit", "width": 4, "depth": 2},
            **extra}


def test_task_comes_from_the_dataset_and_old_specs_keep_classification():
    assert JobSpec.model_validate(job({"name": "spirals"})).task == "classification"
    assert JobSpec.model_validate(job({"name": "sine"})).task == "regression"
    assert JobSpec.model_validate(job({"name": "digits_denoising", "noise": 0.1})).task == "denoising"
    spec = JobSpec.model_validate(job({"name": "digits_completion"}, task="denoising"))
    assert spec.dataset.mask.kind == "block" and spec.dataset.mask.fraction == 0.25
    again = JobSpec.model_validate(spec.model_dump(mode="json"))
    assert again == spec and again.spec_hash() == spec.spec_hash()
    assert JobSpec.model_validate(job({"name": "digits"})).model_dump()["task"] == "classification"


@pytest.mark.parametrize(
    "spec,message",
    [
        (job({"name": "sine"}, task="classification"), "does not match dataset 'sine'"),
        (job({"name": "spirals"}, task="regression"), "does not match dataset 'spirals'"),
        (job({"name": "digits_denoising"}), "σ_train"),
        (job({"name": "digits", "mask": {"kind": "pixels"}}), "digits_completion' only"),
        (job({"name": "sine"}, train={"logit_scale": 10.0}), "logit_scale applies to task 'classification'"),
        (job({"name": "digits"}, evaluate={"plug_and_play": {}}), "plug_and_play needs task 'denoising'"),
        (job({"name": "digits_completion", "n_train": 1500, "n_test": 500}), "1797 images"),
        (job({"name": "digits_completion", "mask": {"fraction": 1.5}}), "fraction"),
    ],
)
def test_bad_task_specs_are_rejected(spec, message):
    with pytest.raises(ValidationError, match=message):
        JobSpec.model_validate(spec)


# ---------------------------------------------------------------------------------------------------- metrics
class Affine(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)

    def forward(self, x):
        return x @ self.weight.T + self.bias

    def lipschitz_bound(self) -> float:
        return float(torch.linalg.matrix_norm(self.weight.detach().double(), 2))


def test_mse_and_psnr_match_a_hand_computation():
    model = Affine(torch.eye(2), torch.zeros(2))  # the identity: outputs = inputs
    x = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    y = torch.tensor([[0.6, 0.3], [0.0, 0.8]])
    # squared errors 0.01, 0.04, 0, 0.04 → MSE 0.0225; PSNR = 10·log10(1/0.0225) = 16.478 dB
    metrics = clean_metrics(model, x, y, peak=1.0, denoising=True)
    assert metrics["clean_mse"] == pytest.approx(0.0225)
    assert metrics["clean_psnr"] == pytest.approx(10 * math.log10(1 / 0.0225)) == pytest.approx(16.4782, abs=1e-4)
    assert metrics["input_psnr"] == metrics["clean_psnr"]  # the model is the identity
    assert psnr(0.0225, peak=2.0) == pytest.approx(10 * math.log10(4 / 0.0225))
    assert psnr(0.0, 1.0) == MAX_PSNR and mse(x, x) == 0.0
    g = gaussian_noise_regression(model, x, y, [0.0, 0.5], repeats=4, seed=1, peak=1.0, baseline=True)
    assert g["gaussian_mse@0"] == pytest.approx(0.0225) and g["gaussian_mse_std@0"] == 0.0
    assert g["gaussian_psnr@0"] == pytest.approx(metrics["clean_psnr"])
    # by hand at σ = 0.5: the same draws as the classification evaluation makes, one (N, d) draw per (σ, repeat)
    gen = torch.Generator().manual_seed(1)
    noise = torch.stack([torch.randn((2, 2), generator=gen) for _ in range(2 * 4)]).view(2, 4, 2, 2)[1]
    draws = ((x + 0.5 * noise - y) ** 2).mean(dim=(1, 2)).double()
    assert g["gaussian_mse@0.5"] == pytest.approx(float(draws.mean()))
    assert g["gaussian_mse_std@0.5"] == pytest.approx(float(draws.std(unbiased=False)))
    assert g["gaussian_psnr@0.5"] == pytest.approx(float((10 * torch.log10(1 / draws)).mean()))
    assert g["gaussian_input_psnr@0.5"] == pytest.approx(g["gaussian_psnr@0.5"])  # identity model


def test_gaussian_noise_is_clipped_only_to_a_declared_range():
    model = Affine(torch.eye(1), torch.zeros(1))
    x = torch.zeros(200, 1)
    free = gaussian_noise_regression(model, x, x, [1.0], repeats=1)
    boxed = gaussian_noise_regression(model, x, x, [1.0], repeats=1, valid_range=(0.0, 1.0))
    noise = torch.randn((200, 1), generator=torch.Generator().manual_seed(0))  # the draws the evaluation makes
    assert free["gaussian_mse@1"] == pytest.approx(float(noise.double().pow(2).mean()))
    assert boxed["gaussian_mse@1"] == pytest.approx(float(noise.clamp(0, 1).double().pow(2).mean()))
    assert boxed["gaussian_mse@1"] < 0.4 * free["gaussian_mse@1"]


@pytest.fixture(scope="module")
def trained_sine():
    """A small explicit ResNet fitted to the sine data (about a second)."""
    torch.manual_seed(0)
    data = datasets.sine()
    spec = ModelSpec(family="explicit", width=4, hidden=16, depth=4, h=0.5, activation="tanh", input_dim=1,
                     output_dim=1)
    model = build_model(spec)
    train = JobSpec.model_validate(job({"name": "sine"}, train={"epochs": 150, "lr": 0.02})).train
    train_classifier(model, data, train, torch.device("cpu"), task="regression")
    return model.eval(), data


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_pgd_mse_beats_clean_and_random_noise_of_the_same_norm(trained_sine, norm):
    model, data = trained_sine
    x, y = data.x_test, data.y_test
    eps = 0.2
    metrics, settings = pgd_regression(model, x, y, norm, [eps], steps=30, restarts=2)
    worst = metrics[f"pgd_{norm.lower()}_mse@0.2"]
    attack_only = settings["eps"]["0.2"]["attack_only_mse"]
    clean = mse(model(x), y)
    assert worst >= clean and attack_only > clean
    gen = torch.Generator().manual_seed(0)
    random = []
    for _ in range(20):  # random perturbations on the boundary of the same ball
        if norm == "Linf":
            delta = eps * torch.sign(torch.randn(x.shape, generator=gen))
        else:
            delta = torch.randn(x.shape, generator=gen)
            delta = eps * delta / delta.norm(dim=1, keepdim=True)
        random.append(mse(model(x + delta), y))
    assert attack_only >= max(random)


def test_squared_error_logits_make_cross_entropy_increase_with_the_error():
    box = attack_box(Affine(torch.eye(3), torch.zeros(3)), torch.rand(4, 3), 0.1, (0.0, 1.0))
    u = torch.rand(4, 1, 1, 3, requires_grad=True)
    target = torch.rand(4, 3)
    objective = SquaredErrorLogits(box, target)
    loss = nn.CrossEntropyLoss()(objective(u), torch.zeros(4, dtype=torch.long))
    error = objective.squared_error(u)
    assert loss.item() == pytest.approx(float(nn.functional.softplus(4 * error).mean()), rel=1e-5)
    (g_ce,) = torch.autograd.grad(loss, u)
    (g_err,) = torch.autograd.grad(error.sum(), u)
    assert torch.equal(torch.sign(g_ce), torch.sign(g_err))  # same ascent direction per sample
    cosine = nn.functional.cosine_similarity(g_ce.flatten(1), g_err.flatten(1))
    assert (cosine > 1 - 1e-5).all()
    with pytest.raises(ValueError, match="targets are bound"):
        objective(u[:2])


def strongest_deviation(model, x, eps, restarts=3, steps=40, seed=0):
    """Our own multi-restart L2 PGD maximising ‖f(x + δ) − f(x)‖ per sample; returns (ratio, ‖δ‖) with ratio =
    ‖f(x+δ) − f(x)‖/‖δ‖ of the best δ found."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        fx = model(x)
    best = torch.zeros(len(x), dtype=torch.float64)
    for _ in range(restarts):
        delta = torch.randn(x.shape, generator=gen)
        delta = eps * delta / delta.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
        for _ in range(steps):
            delta.requires_grad_(True)
            gap = (model(x + delta) - fx).flatten(1).norm(dim=1)
            (grad,) = torch.autograd.grad(gap.sum(), delta)
            with torch.no_grad():
                step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view_as(gap[:, None])
                delta = delta + 0.25 * eps * step
                norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
                delta = delta * (eps / norm).clamp(max=1.0)[:, None]
        with torch.no_grad():
            ratio = (model(x + delta) - fx).flatten(1).norm(dim=1).double() / delta.flatten(1).norm(dim=1).double()
            best = torch.maximum(best, ratio)
    return best


@pytest.mark.parametrize(
    "model_spec",
    [
        {"family": "explicit", "width": 6, "depth": 3, "h": 0.5},
        {"family": "implicit", "width": 6, "depth": 2, "h": 0.5, "theta": 0.5, "spectral": {"lower": -1, "upper": 1}},
        {"family": "hamiltonian", "width": 6, "depth": 3, "h": 0.5},
        {"family": "lipschitz", "width": 6, "depth": 3},
    ],
    ids=lambda s: s["family"],
)
def test_certified_output_bound_survives_a_strong_attack(model_spec, trained_sine):
    torch.manual_seed(1)
    model = build_model(ModelSpec(**model_spec, input_dim=2, output_dim=2)).eval()
    with torch.no_grad():  # make it less trivial than the initialisation
        for p in model.parameters():
            p.mul_(1.5)
    x = torch.rand(24, 2) * 1.5 + 0.5
    bound = lipschitz_bound(model)
    for eps in (0.05, 0.5):
        ratio = strongest_deviation(model, x, eps)
        assert (ratio <= bound * (1 + 1e-5)).all(), (float(ratio.max()), bound)
    y = x.flip(1)
    metrics, _ = certified_regression(model, x, y, [0.1])
    assert metrics["lipschitz_bound"] == bound
    assert metrics["certified_l2_deviation_mse@0.1"] == pytest.approx((bound * 0.1) ** 2 / 2)
    pgd, _ = pgd_regression(model, x, y, "L2", [0.1], steps=30, restarts=2)
    assert mse(model(x), y) <= pgd["pgd_l2_mse@0.1"] <= metrics["certified_l2_mse@0.1"]
    # on the trained sine model too (d = 1: the L∞ and L2 balls coincide)
    sine_model, data = trained_sine
    metrics, _ = certified_regression(sine_model, data.x_test, data.y_test, [0.1])
    assert metrics["certified_linf_mse@0.1"] == pytest.approx(metrics["certified_l2_mse@0.1"])
    ratio = strongest_deviation(sine_model, data.x_test, 0.1)
    assert (ratio <= metrics["lipschitz_bound"] * (1 + 1e-5)).all()


def test_regression_sanity_fails_loudly():
    good = {"clean_mse": 0.1, "pgd_linf_mse@0.1": 0.2, "certified_linf_mse@0.1": 0.5, "pgd_l2_mse@0.1": 0.15}
    assert all(check_sanity(good).values())
    with pytest.raises(SanityCheckFailed, match="clean_mse<=pgd_l2_mse@0.1"):
        check_sanity({**good, "pgd_l2_mse@0.1": 0.05})
    with pytest.raises(SanityCheckFailed, match="pgd_linf_mse@0.1<=certified_linf_mse"):
        check_sanity({**good, "certified_linf_mse@0.1": 0.15})
    with pytest.raises(SanityCheckFailed, match="clean_mse_finite"):
        check_sanity({"clean_mse": float("nan")})


def test_rollout_of_the_exact_flow_is_exact():
    data = datasets.lotka_volterra(n_train=50, n_test=50)

    class Lookup(nn.Module):  # the true flow map on the stored trajectory (a step counter)
        def __init__(self):
            super().__init__()
            self.j = 0

        def forward(self, z):
            self.j += 1
            return data.trajectories[:, self.j]

    assert rollout_mse(Lookup(), data.trajectories) == 0.0
    assert rollout_mse(nn.Identity(), data.trajectories) > 0.01


# ---------------------------------------------------------------------------------------------------- plug-and-play
def test_blur_operator_is_the_zero_padded_convolution():
    k = blur_operator("motion", 8)
    image = torch.rand(8, 8, dtype=torch.float64)
    padded = nn.functional.pad(image, (1, 1))
    expected = (padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]) / 3
    assert torch.allclose(k @ image.flatten(), expected.flatten())
    assert torch.equal(blur_operator("none", 8), torch.eye(64, dtype=torch.float64))
    g = blur_operator("gaussian", 8)
    assert torch.allclose(g, g.T) and float(torch.linalg.matrix_norm(g, 2)) <= 1 + 1e-12


def test_convergence_guarantee_needs_every_condition():
    assert convergence_guarantee(1.0, 0.5, 1.0, 1.0)["averaged"]
    assert convergence_guarantee(1.0, 0.5, 1.0, 1.0)["averaged_parameter"] == pytest.approx(2 / 3)
    assert not convergence_guarantee(1.2, 0.5, 1.0, 1.0)["averaged"]
    assert not convergence_guarantee(None, 0.5, 1.0, 1.0)["averaged"]
    assert not convergence_guarantee(1.0, 1.0, 1.0, 1.0)["averaged"]  # λ = 1: only nonexpansive
    assert not convergence_guarantee(1.0, 0.5, 2.0, 1.0)["averaged"]  # α = 2/‖K‖²


def test_plug_and_play_with_a_1_lipschitz_denoiser_is_averaged_and_monotone():
    torch.manual_seed(0)
    model = build_model(ModelSpec(family="lipschitz", width=32, depth=3, activation="relu", input_dim=64,
                                  output_dim=64)).eval()
    clean = datasets.digits(n_train=10, n_test=40).x_test
    metrics, info = plug_and_play(model, clean, [0.0, 0.05], iterations=30, blur="gaussian", relaxation=0.5)
    assert info["averaged"] and metrics["pnp_averaged"] == 1.0
    assert metrics["pnp_denoiser_lipschitz"] <= 1 + 1e-6
    assert metrics["pnp_monotone@0"] == 1.0 and metrics["pnp_monotone@0.05"] == 1.0
    assert metrics["pnp_input_psnr@0"] > metrics["pnp_input_psnr@0.05"]
    again, _ = plug_and_play(model, clean, [0.0, 0.05], iterations=30, blur="gaussian", relaxation=0.5)
    assert again == metrics


# ---------------------------------------------------------------------------------------------------- end to end
TINY = {
    "sine": job(
        {"name": "sine", "n_train": 51, "n_test": 50},
        {"family": "explicit", "width": 4, "hidden": 16, "depth": 4, "h": 0.5},
        train={"epochs": 40},
        evaluate={"gaussian": {"sigmas": [0.0, 0.1], "repeats": 3}, "pgd": {"eps": [0.1], "steps": 5},
                  "certified": {"eps": [0.1]}},
    ),
    "lotka_volterra": job(
        {"name": "lotka_volterra", "n_train": 100, "n_test": 50},
        {"family": "explicit", "width": 8, "depth": 3, "h": 0.2},
        train={"epochs": 30},
        evaluate={"gaussian": {"sigmas": [0.0, 0.05], "repeats": 2}, "pgd": {"eps": [0.05], "steps": 5},
                  "certified": {"eps": [0.05]}},
    ),
    "digits_denoising": job(
        {"name": "digits_denoising", "n_train": 100, "n_test": 50, "noise": 0.1},
        {"family": "explicit", "width": 16, "depth": 2, "h": 1.0, "spectral": {"lower": -6.0, "upper": 4.0}},
        train={"epochs": 5, "batch_size": 50},
        evaluate={"gaussian": {"sigmas": [0.0, 0.1], "repeats": 2}, "pgd": {"eps": [0.05], "steps": 5},
                  "certified": {"eps": [0.05]}},
    ),
    "digits_completion": job(
        {"name": "digits_completion", "n_train": 100, "n_test": 50, "mask": {"kind": "pixels", "fraction": 0.2}},
        {"family": "explicit", "width": 16, "depth": 2, "h": 0.5},
        train={"epochs": 5, "batch_size": 50},
        evaluate={"gaussian": {"sigmas": [0.0, 0.1], "repeats": 2}, "pgd": {"norm": "L2", "eps": [0.1], "steps": 5}},
    ),
    "digits_pnp": job(
        {"name": "digits_denoising", "n_train": 100, "n_test": 30, "noise": 0.1},
        {"family": "lipschitz", "width": 16, "depth": 2, "activation": "relu"},
        train={"epochs": 5, "batch_size": 50},
        evaluate={"gaussian": None, "certified": {"eps": [0.05]},
                  "plug_and_play": {"sigmas": [0.0, 0.05], "iterations": 10}},
    ),
}


@pytest.mark.parametrize("name", list(TINY))
def test_each_new_task_runs_end_to_end_reproducibly(name, tmp_path):
    spec = JobSpec.model_validate(TINY[name])
    first = run_job(spec, out_dir=tmp_path)
    second = run_job(spec)
    timeless = lambda m: {k: v for k, v in m.items() if not metrics.is_timing(k)}  # noqa: E731
    assert timeless(first.metrics) == timeless(second.metrics)
    m = first.metrics
    assert all(math.isfinite(v) for v in m.values()), m
    assert not [n for n in m if metrics.kind_info(n) is None], "metrics missing from the catalog"
    assert "clean_acc" not in m and "train_mse" in m and m["clean_psnr"] == pytest.approx(psnr(m["clean_mse"],
                                                                                          first.info["psnr_peak"]))
    assert all(first.info["sanity"].values())
    if spec.evaluate.gaussian is not None:
        assert m["gaussian_mse@0"] == pytest.approx(m["clean_mse"], rel=1e-5)
    if spec.task == "denoising":
        assert "input_psnr" in m and first.info["psnr_peak"] == 1.0
    if spec.dataset.name == "lotka_volterra":
        assert m["rollout_mse"] > 0
    if spec.evaluate.plug_and_play is not None:
        assert m["pnp_averaged"] == 1.0 and first.info["plug_and_play"]["averaged"]
        assert {"plot_pnp.png"} <= set(first.info["plots"])
    assert (tmp_path / "result.json").exists() and first.info["plots"], first.info.get("warnings")
    assert not [w for w in first.info["warnings"] if w.startswith("plots not written")]


# ---------------------------------------------------------------------------------------------------- plots
def test_regression_plots_are_written_from_flat_metrics(tmp_path):
    import matplotlib.image

    from evaluation import plots

    sigmas = (0.0, 0.1, 0.2)
    metrics = {
        "clean_mse": 0.01, "clean_psnr": 20.0, "input_psnr": 18.0,
        **{f"gaussian_mse@{s:g}": 0.01 + s for s in sigmas}, **{f"gaussian_mse_std@{s:g}": 0.01 * s for s in sigmas},
        **{f"gaussian_psnr@{s:g}": 20 - 10 * s for s in sigmas}, **{f"gaussian_psnr_std@{s:g}": s for s in sigmas},
        **{f"gaussian_input_psnr@{s:g}": 18 - 20 * s for s in sigmas},
        "pgd_linf_mse@0.05": 0.02, "pgd_l2_mse@0.05": 0.015, "certified_l2_mse@0.05": 0.5,
        "certified_linf_mse@0.05": 5.0, "pnp_psnr@0": 21.0, "pnp_psnr@0.05": 19.5, "pnp_input_psnr@0": 14.4,
        "pnp_input_psnr@0.05": 14.1, "pnp_monotone@0": 1.0, "pnp_monotone@0.05": 1.0, "pnp_averaged": 1.0,
    }
    written = plots.write_plots(tmp_path, metrics, "regression")
    assert written == [plots.GAUSSIAN_FILE, plots.EPS_FILE, plots.PNP_FILE]
    for name in written:
        image = matplotlib.image.imread(tmp_path / name)
        assert image.shape[0] >= 200 and len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 8
    assert plots.write_plots(tmp_path / "none", {"clean_mse": 0.1}, "none") == []
