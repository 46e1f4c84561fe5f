"""Convolutional residual functions for the explicit and implicit families (``model.conv = true``).

Single-channel square images arrive flat, (N, n²) (the 8×8 digits: 64 features); :class:`ConvEmbedding` reshapes
them to (N, 1, n, n) and lifts them to ``channels`` feature maps with a k×k convolution, and every residual step
works on the flat state (N, channels·n²) through :class:`ConvResidualFunction`::

    F(x) = K₂ ⋆ σ(K₁ ⋆ x + b₁) + b₂        (zero padding k//2, stride 1: 'same' size)

Lipschitz bounds use the **exact** spectral norm of each convolution as a linear operator on C×n×n images
(:func:`conv_operator_norm`): the operator's matrix is built once, in float64, by writing each kernel tap where
it acts (:func:`conv_operator_matrix`), and its largest singular value is taken exactly
(:mod:`models.spectral_norms`). On small images that is affordable (C·n² = 512 for 8 channels on 8×8: about
26 ms per convolution on one CPU core) and, unlike power iteration, never an underestimate; unlike the
circular-convolution (FFT) bound of :mod:`models.lipschitz_layers`, it is exact for the zero-padded operator rather
than an upper bound. Above :data:`EXACT_CONV_SIZE` rows (64 channels on 32×32 would be a 65 536² matrix) certificates
use :func:`conv_norm_bound`, a provable upper bound that never forms the matrix (:func:`certified_conv_norm`).
The implicit θ-step solves with F in closed form (:mod:`models.conv_term`). Example::

    embed = ConvEmbedding(channels=8, side=8, kernel_size=3)
    f = ConvResidualFunction(channels=8, hidden=8, side=8)
    y = f(embed(x))                    # x: (N, 64) → (N, 512)
    f.lipschitz_bound()                # Lip(σ)·‖K₂‖₂·‖K₁‖₂, exact
"""

from __future__ import annotations

import torch
from torch import nn

from models.conv_term import ConvTerm
from models.lipschitz_layers import conv_operator_norm_bound
from models.residual import ACTIVATIONS, has_closed_form
from models.spectral_norms import exact_spectral_norm


def conv_operator_matrix(kernel: torch.Tensor, side: int) -> torch.Tensor:
    """The (C'·n²)×(C·n²) matrix of the zero-padded ('same', stride 1) convolution with ``kernel`` (C'×C×k×k) on
    C×n×n images, in float64. Conv2d is a cross-correlation: output pixel (i, j) reads input pixel
    (i + a − k//2, j + b − k//2) through tap (a, b), so each C'×C block of taps is written where that input pixel
    lies inside the image (zero padding: nowhere else)."""
    c_out, c_in, k = kernel.shape[0], kernel.shape[1], kernel.shape[-1]
    device = kernel.device
    pixel = torch.arange(side, device=device)
    tap = torch.arange(k, device=device)
    # (i, j, a, b) for every output pixel and tap, and the input pixel (ii, jj) it reads
    i, j, a, b = torch.meshgrid(pixel, pixel, tap, tap, indexing="ij")
    ii, jj = i + a - k // 2, j + b - k // 2
    inside = (ii >= 0) & (ii < side) & (jj >= 0) & (jj < side)
    out_pixel, in_pixel = (i * side + j)[inside], (ii * side + jj)[inside]
    blocks = torch.zeros(side * side, side * side, c_out, c_in, dtype=torch.float64, device=device)
    blocks[out_pixel, in_pixel] = kernel.detach().double().permute(2, 3, 0, 1)[a[inside], b[inside]]
    return blocks.permute(2, 0, 3, 1).reshape(c_out * side * side, c_in * side * side)


def conv_operator_norm(kernel: torch.Tensor, side: int) -> float:
    """Exact ‖·‖₂ of the zero-padded convolution with ``kernel`` on C×n×n images: the largest singular value of
    :func:`conv_operator_matrix` (:func:`models.spectral_norms.exact_spectral_norm`, float64)."""
    with torch.no_grad():
        return exact_spectral_norm(conv_operator_matrix(kernel, side))


def image_size(side: int | tuple[int, int]) -> tuple[int, int]:
    """(H, W) of an image given as its side n (square) or as (H, W)."""
    return (side, side) if isinstance(side, int) else (int(side[0]), int(side[1]))


EXACT_CONV_SIZE = 1024  # rows or columns of the operator matrix up to which its norm is taken exactly


def conv_norm_bound(kernel: torch.Tensor, side: int | tuple[int, int]) -> torch.Tensor:
    """THE sound upper bound on ‖·‖₂ of the zero-padded ('same', stride 1) convolution with ``kernel`` on C×H×W
    images that every layer of the image backbone (:mod:`models.image`) uses, in training (differentiable, e.g. the
    step size τ of a 1-Lipschitz layer) and in certificates alike; it never forms the operator matrix.

    Today: the exact norm of the circular convolution on the (H + k − 1)×(W + k − 1) grid, which contains the
    zero-padded one as a restriction (:func:`models.lipschitz_layers.conv_operator_norm_bound`, Sedghi, Gupta &
    Long, 2019). The one place to change for a tighter or cheaper provable bound (Gram iteration)."""
    return conv_operator_norm_bound(kernel, image_size(side))


def certified_conv_norm(kernel: torch.Tensor, side: int | tuple[int, int]) -> float:
    """‖·‖₂ of the zero-padded convolution for a certificate: exact (:func:`conv_operator_norm`) on square images
    while the operator matrix has at most :data:`EXACT_CONV_SIZE` rows and columns, else :func:`conv_norm_bound`.
    Both are sound."""
    height, width = image_size(side)
    if height == width and max(kernel.shape[0], kernel.shape[1]) * height * width <= EXACT_CONV_SIZE:
        return conv_operator_norm(kernel, height)
    with torch.no_grad():
        return float(conv_norm_bound(kernel.detach().double(), (height, width)))


class ConvEmbedding(nn.Module):
    """(N, n²) → (N, channels·n²): reshape to one-channel n×n images, k×k convolution to ``channels`` maps."""

    def __init__(self, channels: int, side: int, kernel_size: int = 3):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd ('same' padding), got {kernel_size}")
        self.side = side
        self.conv = nn.Conv2d(1, channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.reshape(x.shape[0], 1, self.side, self.side)).flatten(1)

    def lipschitz_bound(self) -> float:
        """Exact operator norm of the convolution (the bias does not change the Lipschitz constant)."""
        return conv_operator_norm(self.conv.weight, self.side)


class ConvResidualFunction(nn.Module):
    """F(x) = K₂ ⋆ σ(K₁ ⋆ x + b₁) + b₂ on a flat state (N, channels·H·W), ``hidden`` intermediate channels
    (``side``: n for n×n images, or (H, W)).

    Same interface as :class:`models.residual.ResidualFunction` (:meth:`weights` once per step, with graph;
    :meth:`apply` pure; :meth:`implicit_term` in closed form, :class:`models.conv_term.ConvTerm`), so
    :class:`models.steps.ExplicitStep` and :class:`models.steps.ThetaStep` (and its solvers and implicit backward)
    use it unchanged."""

    def __init__(self, channels: int, hidden: int, side: int | tuple[int, int], kernel_size: int = 3,
                 activation: str = "tanh"):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd ('same' padding), got {kernel_size}")
        act_cls, self.activation_lipschitz = ACTIVATIONS[activation]
        self.activation = act_cls()
        self.channels, self.size, self.pad = channels, image_size(side), kernel_size // 2
        self.conv1 = nn.Conv2d(channels, hidden, kernel_size)
        self.conv2 = nn.Conv2d(hidden, channels, kernel_size)

    def weights(self) -> dict[str, torch.Tensor]:
        return {"w1": self.conv1.weight, "b1": self.conv1.bias, "w2": self.conv2.weight, "b2": self.conv2.bias}

    def apply(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        image = x.reshape(x.shape[0], self.channels, *self.size)
        hidden = self.activation(nn.functional.conv2d(image, params["w1"], params["b1"], padding=self.pad))
        return nn.functional.conv2d(hidden, params["w2"], params["b2"], padding=self.pad).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(self.weights(), x)

    def implicit_term(self, params: dict[str, torch.Tensor], coeff: float) -> ConvTerm | None:
        """coeff·F as a :class:`models.conv_term.ConvTerm` (None: no closed-form σ')."""
        if not has_closed_form(self.activation):
            return None
        image = (self.channels, *self.size)
        return ConvTerm.fold(self.activation, params["w1"], params["b1"], params["w2"], params["b2"], coeff, image)

    def lipschitz_bound(self) -> float:
        """Lip(F) ≤ Lip(σ)·‖K₂‖₂·‖K₁‖₂, each norm exact while small, else a sound bound
        (:func:`certified_conv_norm`)."""
        norm1 = certified_conv_norm(self.conv1.weight, self.size)
        return self.activation_lipschitz * certified_conv_norm(self.conv2.weight, self.size) * norm1


__all__ = ["ConvEmbedding", "ConvResidualFunction", "certified_conv_norm", "conv_norm_bound", "conv_operator_matrix",
           "conv_operator_norm", "image_size"]
