"""Which data a job uses: the dataset section of the spec."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from core.spec.base import DIGITS_IMAGES, MAX_SAMPLES, NonNegFloat, PosFloat, StrictModel


class MaskSpec(StrictModel):
    """Missing pixels of ``digits_completion`` (set to 0 in the input): ``block`` = one square of about
    ``fraction`` of the image at a random position per image; ``pixels`` = that fraction of pixels at random."""

    kind: Literal["block", "pixels"] = "block"
    fraction: float = Field(0.25, gt=0.0, lt=1.0, allow_inf_nan=False)


# Every dataset has one task; JobSpec.task defaults to it (and must agree with it when given).
DATASET_TASKS: dict[str, str] = {
    "spirals": "classification",
    "digits": "classification",
    "upload": "classification",
    "sine": "regression",
    "lotka_volterra": "regression",
    "digits_denoising": "denoising",
    "digits_completion": "denoising",
}
TaskName = Literal["classification", "regression", "denoising"]


class DatasetSpec(StrictModel):
    """Which data. ``spirals`` is the two-spirals problem of Haber & Ruthotto used in Reshniak & Webster (200 points,
    every other point held out); ``digits`` is scikit-learn's bundled 8×8 UCI digits; ``upload`` is a user's
    ``.npz`` named by ``artifact`` (the first ``n_train`` / ``n_test`` rows of its splits).

    Regression (Reshniak & Webster, 001): ``sine`` fits sin x + 0.1·cos 19x on [−5, 5] from ``n_train`` equally spaced
    points (the seed: 51; test: the ``n_test`` cell midpoints); ``lotka_volterra`` learns the Δt = 0.2 flow map
    z_k ↦ z_{k+1} of ż₁ = 2/3·z₁ − 4/3·z₁z₂, ż₂ = z₁z₂ − z₂ from 50-step trajectories (n_train, n_test count pairs).
    For both, ``noise`` is Gaussian noise on the training targets.
    Denoising (Reshniak; inputs and targets in [0, 1]): ``digits_denoising`` maps clean + ``noise``·N(0, I)
    (clipped; ``noise`` = σ_train, required > 0) to the clean digit; ``digits_completion`` maps a digit with the
    ``mask``'s pixels set to 0 (plus optional ``noise``) to the clean digit."""

    name: Literal["spirals", "digits", "sine", "lotka_volterra", "digits_denoising", "digits_completion", "upload"]
    n_train: int = Field(100, ge=2, le=MAX_SAMPLES)
    n_test: int = Field(100, ge=1, le=MAX_SAMPLES)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    noise: NonNegFloat = 0.0
    scale: PosFloat = Field(
        1.0,
        description="spirals only: multiply the coordinates (points in [-scale, scale]²). 4 puts the Gaussian-noise "
        "levels σ = 0…0.5 of Reshniak & Webster's poster on the scale of its table (examples/spirals-theta-sweep.json)",
    )
    artifact: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="name 'upload' only: 'artifact:<id>' of a dataset uploaded to POST /api/v1/artifacts/datasets "
        "(resolved by the worker), or the path of a local .npz (x_train, y_train, x_test, y_test)",
    )
    mask: MaskSpec | None = Field(
        None, description="digits_completion only: the missing pixels (default: a block of 1/4 of the image)"
    )

    @model_validator(mode="after")
    def _artifact_iff_upload(self) -> DatasetSpec:
        if self.name == "upload" and self.artifact is None:
            raise ValueError("dataset.artifact is required for dataset 'upload' ('artifact:<id>' or a .npz path)")
        if self.name != "upload" and self.artifact is not None:
            raise ValueError(f"dataset.artifact applies to dataset 'upload' only, not {self.name!r}")
        if self.name != "spirals" and self.scale != 1.0:
            raise ValueError(f"dataset.scale applies to dataset 'spirals' only, not {self.name!r}")
        if self.name == "digits_completion" and self.mask is None:
            self.mask = MaskSpec()
        if self.name != "digits_completion" and self.mask is not None:
            raise ValueError(f"dataset.mask applies to dataset 'digits_completion' only, not {self.name!r}")
        if self.name == "digits_denoising" and self.noise == 0:
            raise ValueError("dataset.noise is the input corruption σ_train of 'digits_denoising': give one > 0")
        if self.name in ("digits_denoising", "digits_completion") and self.n_train + self.n_test > DIGITS_IMAGES:
            raise ValueError(f"{self.name} has {DIGITS_IMAGES} images; n_train + n_test = {self.n_train + self.n_test}")
        return self
