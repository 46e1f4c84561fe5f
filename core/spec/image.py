"""The image backbone's options of a model (``model.conv = true`` with ``model.stages``): stages, downsampling and
per-channel normalisation inside the model, for families whose steps have a convolutional form.

::

    "model": {"family": "lipschitz", "conv": true, "kernel_size": 3,
              "stages": [{"channels": 16, "depth": 4}, {"channels": 32, "depth": 4}],
              "downsample": "unshuffle", "normalization": "dataset"}

The input is C×H×W (``input_shape``, filled from the data like ``input_dim``; flat square data such as the 8×8
digits is read as one channel). A k×k convolution lifts it to the first stage's channels; each stage runs ``depth``
residual steps on ``channels`` × H × W (``hidden`` intermediate channels, default ``channels``); between stages
``downsample`` "unshuffle" halves H and W by pixel-unshuffle (an isometry, C → 4C channels) and "none" keeps them,
then a 1×1 convolution sets the next stage's channels; global average pooling and a linear head close the network.
``normalization``: (x − mean)/std per channel inside the model, so that every threat model stays in [0, 1] pixel
space; "dataset" takes the dataset's published statistics.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from core.spec.base import MAX_DEPTH, MAX_FEATURES, StrictModel

MAX_STAGES = 8
MAX_CHANNELS = 512
MAX_IMAGE_CHANNELS = 16
Downsample = Literal["unshuffle", "none"]


class StageSpec(StrictModel):
    """One stage: ``depth`` residual steps on ``channels`` × H × W, each step's function with ``hidden``
    intermediate channels (default: ``channels``)."""

    channels: int = Field(ge=1, le=MAX_CHANNELS)
    depth: int = Field(1, ge=1, le=MAX_DEPTH)
    hidden: int | None = Field(None, ge=1, le=MAX_CHANNELS)


class NormalizationSpec(StrictModel):
    """(x − mean_c)/std_c per input channel, inside the model (its Lipschitz constant 1/min std enters the bound)."""

    mean: list[float] = Field(min_length=1, max_length=MAX_IMAGE_CHANNELS)
    std: list[float] = Field(min_length=1, max_length=MAX_IMAGE_CHANNELS)

    @model_validator(mode="after")
    def _per_channel(self) -> NormalizationSpec:
        if len(self.mean) != len(self.std):
            raise ValueError(f"normalization: {len(self.mean)} means but {len(self.std)} stds (one each per channel)")
        for value in self.mean:
            if not -10.0 <= value <= 10.0:
                raise ValueError(f"normalization.mean must lie in [-10, 10], got {value}")
        for value in self.std:
            if not 1e-3 <= value <= 100.0:
                raise ValueError(f"normalization.std must lie in [0.001, 100], got {value}")
        return self


def check_input_shape(shape: list[int] | None, input_dim: int | None) -> None:
    """``input_shape`` is (C, H, W) with C·H·W = input_dim."""
    if shape is None:
        return
    if len(shape) != 3 or min(shape) < 1 or shape[0] > MAX_IMAGE_CHANNELS:
        raise ValueError(f"model.input_shape must be (C, H, W) with 1 ≤ C ≤ {MAX_IMAGE_CHANNELS}, got {shape}")
    if input_dim is not None and math.prod(shape) != input_dim:
        raise ValueError(f"model.input_shape {shape} has {math.prod(shape)} entries, not input_dim {input_dim}")


def image_of(shape: list[int] | None, input_dim: int | None) -> tuple[int, int, int] | None:
    """(C, H, W) of the input when known: ``input_shape``, else one channel of a square ``input_dim``."""
    if shape is not None:
        return (shape[0], shape[1], shape[2])
    if input_dim is not None and math.isqrt(input_dim) ** 2 == input_dim:
        side = math.isqrt(input_dim)
        return (1, side, side)
    return None


def stage_layout(
    stages: list[StageSpec], downsample: str, image: tuple[int, int, int] | None
) -> list[tuple[int, int, int, int]]:
    """(channels, hidden, pixels, depth) of each stage; pixels = H·W at the stage (MAX_FEATURES while unknown)."""
    pixels = image[1] * image[2] if image is not None else MAX_FEATURES
    out = []
    for index, stage in enumerate(stages):
        if index > 0 and downsample == "unshuffle":
            pixels = max(1, pixels // 4)
        out.append((stage.channels, stage.hidden or stage.channels, pixels, stage.depth))
    return out


def check_stages(stages: list[StageSpec], downsample: str, image: tuple[int, int, int] | None) -> None:
    """Every pixel-unshuffle needs an even image side at its stage."""
    if image is None or downsample != "unshuffle":
        return
    height, width = image[1], image[2]
    for index in range(1, len(stages)):
        if height % 2 or width % 2:
            raise ValueError(
                f"model.stages: stage {index + 1} needs pixel-unshuffle ×2 of a {height}×{width} image (odd side); "
                f"use fewer stages or model.downsample = 'none'"
            )
        height, width = height // 2, width // 2


__all__ = [
    "MAX_STAGES",
    "Downsample",
    "NormalizationSpec",
    "StageSpec",
    "check_input_shape",
    "check_stages",
    "image_of",
    "stage_layout",
]
