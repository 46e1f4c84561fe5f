"""The convolutional image backbone shared by every family (``model.conv = true`` with ``model.stages``): per-channel
normalisation and a k×k lift, then stages of residual steps on C×H×W images with downsampling between them, global
pooling and a linear head (:mod:`models.image`) — or, with ``model.head = "image"``, a 1×1 convolution back to the
input's channels at full resolution (an image-to-image network, e.g. a denoiser for plug-and-play). A family supplies
only its step on one stage::

    image_network(spec, lambda channels, hidden, size: ExplicitStep(ConvResidualFunction(...), spec.h))

The network is a :class:`models.network.ResidualNetwork` whose ``steps`` are the residual steps with the
downsampling modules between the stages (each with a sound ``lipschitz_bound``), so the solver statistics, the
regularizers over the states and the certificates work as for every other family.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from models.families.registry import repeat_steps
from models.image import Downsample, GlobalPool, ImageEmbedding, ImageHead, near_identity_
from models.lipschitz_layers import normalized_linear
from models.network import ResidualNetwork

StepMaker = Callable[[int, int, tuple[int, int]], nn.Module]


def image_shape(s) -> tuple[int, int, int]:
    """(C, H, W) of the input: the spec's ``input_shape`` (filled from the data), else a single-channel square image
    of ``input_dim`` pixels (the 8×8 digits arrive flat)."""
    if getattr(s, "input_shape", None):
        shape = tuple(int(v) for v in s.input_shape)
        if len(shape) != 3 or math.prod(shape) != s.input_dim:
            raise ValueError(f"input_shape {list(shape)} is not (C, H, W) with C·H·W = input_dim {s.input_dim}")
        return shape
    side = math.isqrt(s.input_dim)
    if side * side != s.input_dim:
        raise ValueError(f"an image model needs input_shape (C, H, W) or a square input_dim, got {s.input_dim}")
    return (1, side, side)


def image_network(s, make_step: StepMaker, normalized: bool = False) -> ResidualNetwork:
    """Normalisation + lift → the spec's stages of ``make_step(channels, hidden, (H, W))`` with ``s.downsample``
    between them → global pooling → linear head (``s.head`` "image": → a 1×1 convolution to the input's channels,
    no pooling). ``normalized`` (the 1-Lipschitz family): lift, 1×1 convolutions, pooling and head of norm 1."""
    image = image_shape(s)
    norm = getattr(s, "normalization", None)
    if norm == "dataset":
        raise ValueError(
            "model.normalization 'dataset' is filled with the dataset's statistics by the runner "
            "(evaluation.runner.fill_model_spec); give {'mean': [...], 'std': [...]} to build the model directly"
        )
    mean, std = (norm.mean, norm.std) if norm is not None else (None, None)
    first = s.stages[0].channels
    embed = ImageEmbedding(image, first, s.kernel_size, mean, std, normalized=normalized)
    steps: list[nn.Module] = []
    size, channels = image[1:], first
    for index, stage in enumerate(s.stages):
        if index > 0:
            down = Downsample(channels, stage.channels, size, s.downsample, normalized=normalized)
            steps.append(down)
            size, channels = down.out_size, stage.channels
        hidden = stage.hidden or stage.channels

        def make(c: int = channels, hid: int = hidden, at: tuple[int, int] = size) -> nn.Module:
            return make_step(c, hid, at)

        steps += repeat_steps(make, stage.depth, s.shared_weights)
    if getattr(s, "head", "classifier") == "image":
        if size != image[1:]:
            raise ValueError("model.head 'image' needs every stage at the input's resolution (model.downsample 'none')")
        head = ImageHead(channels, image[0], size, normalized=normalized)
        # lift, 1×1 convolutions between stages and head start near x ↦ x (the steps keep their own init)
        mixers = [step.conv for step in steps if isinstance(step, Downsample) and step.conv is not None]
        for conv in (embed.conv, *mixers, head.conv):
            near_identity_(conv)
        return ResidualNetwork(embed, steps, head)
    pool = GlobalPool(channels, size, scale=1 / math.sqrt(size[0] * size[1]) if normalized else None)
    head = normalized_linear(channels, s.output_dim) if normalized else nn.Linear(channels, s.output_dim)
    return ResidualNetwork(embed, steps, head, pool=pool)


__all__ = ["image_network", "image_shape"]
