"""The parts of the convolutional image backbone (``model.conv = true`` with ``model.stages``) around the residual
steps, each with a sound (mostly exact) Lipschitz bound, so that the network's bound is the product of its parts'::

    x (N, C, H, W) in [0, 1] pixels
      → ChannelNormalization (x − μ_c)/s_c          exact norm 1/min_c s_c
      → lift: k×k conv C → C₁                       conv_norm_bound (or exact while small)
      → stage 1: depth₁ residual steps on C₁×H×W     each family's step bound
      → Downsample: pixel-unshuffle ×2, 1×1 conv     unshuffle: a permutation, norm exactly 1; 1×1 conv: ‖W‖₂ exact
      → stage 2 …
      → GlobalPool: c·Σ_ij x_cij per channel        exact norm c·√(HW)  (average pooling c = 1/HW: 1/√(HW))
      → linear head                                 ‖W‖₂ exact (the pairwise certificate reads its rows)
    or, ``model.head = "image"`` (no downsampling: an image-to-image network such as a denoiser):
      → ImageHead: 1×1 conv C_last → C              ‖W‖₂ exact; output (N, C, H, W), the input's shape

States between the parts are flat (N, C·H·W), as everywhere in :mod:`models.steps`; each part reshapes them (a
view). For the 1-Lipschitz family (``normalized=True``) the lift is divided by its bound and the 1×1 convolution by
its exact norm, and the pooling is c = 1/√(HW), so every part but the normalisation has bound 1: the network's bound
is 1/min_c s_c. Example::

    embed = ImageEmbedding((3, 32, 32), channels=16, kernel_size=3, mean=(0.49, 0.48, 0.45), std=(0.25,) * 3)
    down = Downsample(16, 32, (32, 32))          # (N, 16·32·32) → (N, 32·16·16)
    pool = GlobalPool((16, 16))                  # (N, 32·16·16) → (N, 32), average pooling
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from models.conv import certified_conv_norm, conv_norm_bound
from models.lipschitz_layers import ConvGradientFlowLayer, spectral_norm_exact
from models.spectral_norms import derived_matrix, exact_spectral_norm

DOWNSAMPLES = ("unshuffle", "none")


def normalization_lipschitz(std: torch.Tensor) -> float:
    """Lip of x ↦ (x − μ)/s per channel: its Jacobian is diag(1/s_c) repeated over the pixels, whose exact norm is
    1/min_c s_c."""
    return 1.0 / float(std.double().min())


def global_pool_norm(scale: float, size: tuple[int, int]) -> float:
    """‖·‖₂ of x ↦ scale·Σ_ij x_ij on one H×W channel (R^{HW} → R): the norm of the row vector scale·1ᵀ, which is
    scale·√(HW); channels are pooled independently, so the same number bounds C channels. Average pooling
    (scale = 1/HW) has norm 1/√(HW)."""
    return abs(scale) * math.sqrt(size[0] * size[1])


class ChannelNormalization(nn.Module):
    """(x − μ_c)/s_c per channel with fixed buffers μ, s (the dataset's per-channel mean and std): normalisation
    inside the model, so that every threat model stays in [0, 1] pixel space."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std) or min(std) <= 0:
            raise ValueError(f"normalization needs one mean and one positive std per channel, got {mean}, {std}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.mean) / self.std

    def lipschitz_bound(self) -> float:
        return normalization_lipschitz(self.std)


class ConvNormalization(nn.Module):
    """Parametrization K ↦ K / B(K), B = :func:`models.conv.conv_norm_bound` on ``size``: a convolution of norm ≤ 1
    (in training and eval alike)."""

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = size

    def forward(self, kernel: torch.Tensor) -> torch.Tensor:
        return kernel / conv_norm_bound(kernel, self.size).to(kernel.dtype)


class MatrixNormalization(nn.Module):
    """Parametrization of a 1×1 convolution's weight (C'×C×1×1) W ↦ W/‖W‖₂, the exact norm of the C'×C matrix
    (float64 SVD, as :class:`models.lipschitz_layers.ExactSpectralNormalization`): a 1×1 convolution applies that
    matrix at every pixel, so its operator norm is exactly the matrix's."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight / spectral_norm_exact(weight.flatten(1))


class ImageEmbedding(nn.Module):
    """Flat or image input → per-channel normalisation → k×k convolution to ``channels`` maps, flat
    (N, channels·H·W). ``normalized``: the convolution is divided by its bound (1-Lipschitz family)."""

    def __init__(
        self,
        image: tuple[int, int, int],
        channels: int,
        kernel_size: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        normalized: bool = False,
    ):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd ('same' padding), got {kernel_size}")
        self.image = tuple(image)
        c_in = image[0]
        self.normalize = ChannelNormalization(mean or [0.0] * c_in, std or [1.0] * c_in)
        self.conv = nn.Conv2d(c_in, channels, kernel_size, padding=kernel_size // 2)
        if normalized:
            parametrize.register_parametrization(self.conv, "weight", ConvNormalization(self.image[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.normalize(x.reshape(x.shape[0], *self.image))).flatten(1)

    def lipschitz_bound(self) -> float:
        """1/min s_c (normalisation) × ‖lift‖₂ (:func:`models.conv.certified_conv_norm`; for a lift divided by its
        bound, the smaller of that and the same differentiable bound it was divided by, recomputed in float64 on the
        weight in use: both are sound, and the second is 1 up to rounding)."""
        weight = self.conv.weight
        norm = certified_conv_norm(weight, self.image[1:])
        if parametrize.is_parametrized(self.conv, "weight"):
            with torch.no_grad():
                norm = min(norm, float(conv_norm_bound(weight.detach().double(), self.image[1:])))
        return self.normalize.lipschitz_bound() * norm


class Downsample(nn.Module):
    """Between two stages: pixel-unshuffle ×2 (C×H×W → 4C×H/2×W/2, "unshuffle"; an invertible permutation of the
    entries, so an isometry) or nothing ("none"), then a 1×1 convolution to ``c_out`` channels where the channel
    count changes (norm ‖W‖₂ exactly; divided by it when ``normalized``)."""

    def __init__(self, c_in: int, c_out: int, size: tuple[int, int], kind: str = "unshuffle", normalized: bool = False):
        super().__init__()
        if kind not in DOWNSAMPLES:
            raise ValueError(f"unknown downsample {kind!r} ({', '.join(DOWNSAMPLES)})")
        height, width = size
        if kind == "unshuffle" and (height % 2 or width % 2):
            raise ValueError(f"pixel-unshuffle ×2 needs an even image size, got {height}×{width}")
        self.kind, self.c_in, self.size = kind, c_in, (height, width)
        factor = 2 if kind == "unshuffle" else 1
        self.out_size = (height // factor, width // factor)
        mid = c_in * factor * factor
        self.conv = nn.Conv2d(mid, c_out, 1) if mid != c_out else None
        if self.conv is not None and normalized:
            parametrize.register_parametrization(self.conv, "weight", MatrixNormalization())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = x.reshape(x.shape[0], self.c_in, *self.size)
        if self.kind == "unshuffle":
            image = nn.functional.pixel_unshuffle(image, 2)
        return (image if self.conv is None else self.conv(image)).flatten(1)

    def matrix(self) -> torch.Tensor:
        """The 1×1 convolution's C'×C matrix (one tensor per :func:`models.spectral_norms.shared_derived_matrices`
        block, so the batched norm is found again by identity)."""
        return derived_matrix(self, "matrix", lambda: self.conv.weight.detach().flatten(1))

    def spectral_norm_matrices(self) -> list[torch.Tensor]:
        """The matrix whose exact norm :meth:`lipschitz_bound` takes (for ``batched_spectral_norms``)."""
        return [] if self.conv is None else [self.matrix()]

    def lipschitz_bound(self) -> float:
        """1 (the unshuffle permutes entries) × ‖W‖₂ of the 1×1 convolution, exact."""
        return 1.0 if self.conv is None else exact_spectral_norm(self.matrix())


class GlobalPool(nn.Module):
    """(N, C·H·W) → (N, C): ``scale``·Σ_ij x_cij per channel (average pooling by default, scale = 1/HW)."""

    def __init__(self, channels: int, size: tuple[int, int], scale: float | None = None):
        super().__init__()
        self.channels, self.size = channels, tuple(size)
        self.scale = 1.0 / (size[0] * size[1]) if scale is None else float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], self.channels, -1).sum(2) * self.scale

    def lipschitz_bound(self) -> float:
        return global_pool_norm(self.scale, self.size)


class ImageHead(nn.Module):
    """(N, C·H·W) → (N, c_out, H, W): a 1×1 convolution back to the input's channels at full resolution, the head of
    an image-to-image network (``model.head = "image"``). It applies the c_out×C matrix W at every pixel, so its
    operator norm is exactly ‖W‖₂ (:meth:`lipschitz_bound`); ``normalized`` divides W by it (1-Lipschitz family)."""

    def __init__(self, c_in: int, c_out: int, size: tuple[int, int], normalized: bool = False):
        super().__init__()
        self.c_in, self.size = c_in, tuple(size)
        self.conv = nn.Conv2d(c_in, c_out, 1)
        if normalized:
            parametrize.register_parametrization(self.conv, "weight", MatrixNormalization())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.reshape(x.shape[0], self.c_in, *self.size))

    def matrix(self) -> torch.Tensor:
        """The 1×1 convolution's matrix (as :meth:`Downsample.matrix`)."""
        return derived_matrix(self, "matrix", lambda: self.conv.weight.detach().flatten(1))

    def spectral_norm_matrices(self) -> list[torch.Tensor]:
        return [self.matrix()]

    def lipschitz_bound(self) -> float:
        """‖W‖₂ of the 1×1 convolution, exact."""
        return exact_spectral_norm(self.matrix())


def near_identity_(conv: nn.Conv2d, scale: float = 0.1) -> None:
    """Initialise ``conv`` (k×k, C_out × C_in, parametrised or not) as the identity on the first min(C_out, C_in)
    channels (a centred delta) plus ``scale`` × its default initialisation, biases 0: the lift and the image head of
    an image-to-image network then start near x ↦ x, the do-nothing denoiser, instead of a random contraction (a
    normalised random lift keeps only a fraction of the image's energy), and training starts from the input's PSNR."""
    weight = conv.parametrizations.weight.original if parametrize.is_parametrized(conv, "weight") else conv.weight
    with torch.no_grad():
        weight.mul_(scale)
        centre = weight.shape[-1] // 2
        for channel in range(min(weight.shape[0], weight.shape[1])):
            weight[channel, channel, centre, centre] += 1.0
        if conv.bias is not None:
            conv.bias.zero_()


class StageGradientFlowLayer(ConvGradientFlowLayer):
    """The 1-Lipschitz conv gradient-flow layer x − τ·conv_transpose2d(σ(conv2d(x, K) + b), K) (Murari, "Adapting
    Gradient Flows to Convolutional Neural Networks") on a C×H×W stage of the backbone, with τ = 2·sigmoid(ϑ)/B(K)²
    from :func:`models.conv.conv_norm_bound`, the backbone's one sound conv bound."""

    def norm_bound(self, kernel: torch.Tensor) -> torch.Tensor:
        return conv_norm_bound(kernel, self.image_size)


__all__ = [
    "DOWNSAMPLES",
    "ChannelNormalization",
    "ConvNormalization",
    "Downsample",
    "GlobalPool",
    "ImageEmbedding",
    "ImageHead",
    "MatrixNormalization",
    "StageGradientFlowLayer",
    "global_pool_norm",
    "near_identity_",
    "normalization_lipschitz",
]
