"""Plug-and-play on natural colour images: the ``photos_denoising`` dataset (patches of scikit-learn's two bundled
photographs), the image-output 1-Lipschitz denoiser (``model.head = "image"``) and its preset end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

import models
from core.budget import estimate
from core.spec import JobSpec, ModelSpec
from evaluation.datasets import photo, photos_denoising
from evaluation.runner import run_job

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MINI = "photos-pnp-lipschitz-conv-mini.json"


def located(patch: torch.Tensor, image: torch.Tensor) -> bool:
    """Whether ``patch`` (C, P, P) is a patch of ``image`` (C, H, W): candidates where the corner pixel matches."""
    side = patch.shape[-1]
    corner = (image == patch[:, :1, :1]).all(0)
    for r, c in corner.nonzero().tolist():
        if r + side <= image.shape[1] and c + side <= image.shape[2]:
            if torch.equal(image[:, r : r + side, c : c + side], patch):
                return True
    return False


def test_training_patches_come_from_one_photograph_and_test_patches_from_the_other() -> None:
    data = photos_denoising(n_train=6, n_test=5, patch=12, seed=3, noise=0.1)
    assert data.x_train.shape == data.y_train.shape == (6, 3, 12, 12)
    assert data.x_test.shape == data.y_test.shape == (5, 3, 12, 12)
    china, flower = photo("china.jpg"), photo("flower.jpg")
    assert china.shape == flower.shape == (3, 427, 640)
    assert all(located(p, china) and not located(p, flower) for p in data.y_train)
    assert all(located(p, flower) and not located(p, china) for p in data.y_test)
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert 0 <= float(x.min()) and float(x.max()) <= 1
        inside = (y > 0.3) & (y < 0.7)  # far from the clipping: the corruption is σ·N(0, 1) there
        assert float((x - y)[inside].std()) == pytest.approx(0.1, rel=0.15)
    again = photos_denoising(n_train=6, n_test=5, patch=12, seed=3, noise=0.1)
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.x_test, data.x_test)
    other = photos_denoising(n_train=6, n_test=5, patch=12, seed=4, noise=0.1)
    assert not torch.equal(other.y_train, data.y_train)


def image_denoiser_spec(**fields) -> ModelSpec:
    base = {
        "family": "lipschitz", "conv": True, "activation": "relu", "input_shape": [3, 8, 8], "input_dim": 192,
        "output_dim": 192, "stages": [{"channels": 6, "depth": 2}, {"channels": 5, "depth": 1}],
        "downsample": "none", "head": "image",
    }  # fmt: skip
    return ModelSpec.model_validate({**base, **fields})


@pytest.mark.parametrize("seed", [0, 1])
def test_the_image_denoisers_bound_is_sound_and_at_most_one(seed: int) -> None:
    torch.manual_seed(seed)
    net = models.build_model(image_denoiser_spec()).double().eval()
    with torch.no_grad():  # away from the initialisation: random kernels, biases and step sizes
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    bound = models.lipschitz_bound(net)
    assert bound <= 1 + 1e-6
    gen = torch.Generator().manual_seed(seed)
    local = 0.0
    for _ in range(4):
        x = torch.rand((3, 8, 8), generator=gen, dtype=torch.float64)
        jacobian = torch.autograd.functional.jacobian(lambda v: net(v.unsqueeze(0)).squeeze(0), x)
        assert jacobian.shape == (3, 8, 8, 3, 8, 8)  # an image out for an image in
        local = max(local, float(torch.linalg.matrix_norm(jacobian.reshape(192, 192), 2)))
    assert 0 < local <= bound * (1 + 1e-9)


@pytest.mark.parametrize("family", ["explicit", "lipschitz"])
def test_an_image_to_image_network_starts_near_the_identity(family: str) -> None:
    """The lift and the head begin as the identity on the input's channels (models.image.near_identity_): the
    network starts near the do-nothing denoiser, not at a random contraction of the image."""
    torch.manual_seed(0)
    x = photos_denoising(n_train=2, n_test=16, patch=8, seed=0, noise=0.05).y_test
    spec = image_denoiser_spec(family=family)
    with torch.no_grad():
        deviation = float((models.build_model(spec).eval()(x) - x).norm() / x.norm())
    # measured 0.09 / 0.44 (without the identity start 1.25 / 1.03); explicit steps x + hF(x) start near x
    assert deviation < (0.2 if family == "explicit" else 0.6)


def photos_job(**changes) -> dict:
    data = json.loads((EXAMPLES / MINI).read_text())
    for section, fields in changes.items():
        data[section] = {**data[section], **fields} if isinstance(fields, dict) else fields
    return data


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"model": {"stages": [{"channels": 4}, {"channels": 8}], "downsample": "unshuffle"}}, "model.downsample"),
        ({"dataset": {"name": "digits", "n_train": 100, "n_test": 10}, "task": "classification"}, "model.head"),
        ({"dataset": {"name": "digits_denoising", "n_train": 100, "n_test": 10, "noise": 0.1}}, "model.head"),
        ({"model": {"stages": None, "downsample": "unshuffle"}}, "model.head"),
        ({"dataset": {"noise": 0.0}}, "dataset.noise"),
        ({"evaluate": {"pgd": {"norm": ["L2"], "eps": [2.0]}}}, "evaluate.pgd.eps"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(changes: dict, field: str) -> None:
    data = photos_job(**changes)
    if data["dataset"]["name"] != "photos_denoising":
        data["dataset"] = changes["dataset"]
        data["evaluate"] = {"gaussian": None}
    with pytest.raises(ValidationError, match=field.replace(".", r"\.")):
        JobSpec.model_validate(data)


def test_the_budget_sees_patches_in_and_patches_out() -> None:
    small, large = (JobSpec.model_validate(photos_job(dataset={"patch": p})) for p in (16, 32))
    # the work of the full-resolution stages grows with the pixels: 4× from 16×16 to 32×32 patches
    assert estimate(large).eval_work == pytest.approx(4 * estimate(small).eval_work)
    channels = small.model.stages[0].channels
    lift, head = 3 * channels * 9, (channels + 1) * 3  # a k×k lift, a 1×1 convolution back to 3 channels
    assert estimate(small).parameters == estimate(large).parameters  # convolutions: no size in the weights
    assert estimate(small).parameters > lift + head and math.isfinite(estimate(small).activation_bytes)


def test_the_mini_preset_deblurs_with_a_convergence_guarantee() -> None:
    spec = JobSpec.model_validate(json.loads((EXAMPLES / MINI).read_text()))
    result = run_job(spec)
    metrics, info = result.metrics, result.info["plug_and_play"]
    assert info["averaged"] and metrics["pnp_averaged"] == 1.0
    assert metrics["pnp_denoiser_lipschitz"] <= 1 + 1e-6
    sigmas = spec.evaluate.plug_and_play.sigmas
    assert all(metrics[f"pnp_monotone@{s:g}"] == 1.0 for s in sigmas)
    assert metrics["pnp_input_psnr@0"] > metrics["pnp_input_psnr@0.05"]
    # after 4 epochs on 256 patches the reconstruction beats the blurred, noisy observation (by about 0.1 dB at
    # σ = 0.01 and 0.7 dB at σ = 0.05), though the denoiser alone is still below its noisy input (clean_psnr)
    for sigma in ("0.01", "0.05"):
        assert metrics[f"pnp_psnr@{sigma}"] > metrics[f"pnp_input_psnr@{sigma}"]
