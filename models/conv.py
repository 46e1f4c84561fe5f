"""Convolutional residual functions for the explicit and implicit families (``model.conv = true``).

Single-channel square images arrive flat, (N, n²) (the 8×8 digits: 64 features); :class:`ConvEmbedding` reshapes
them to (N, 1, n, n) and lifts them to ``channels`` feature maps with a k×k convolution, and every residual step
works on the flat state (N, channels·n²) through :class:`ConvResidualFunction`::

    F(x) = K₂ ⋆ σ(K₁ ⋆ x + b₁) + b₂        (zero padding k//2, stride 1: 'same' size)

Lipschitz bounds use the norm of each convolution as a linear operator on C×n×n images from
:func:`models.conv_norms.conv_lipschitz_bound`: exact (the largest singular value of the operator's matrix, in
float64) where the matrix is small — 8 channels on 8×8 images, 512×512, about 26 ms per convolution — and above that
a provable upper bound by Gram iteration on the circular convolution that contains the zero-padded one, which never
forms the matrix (Delattre et al., ICML 2023; see :mod:`models.conv_norms`). Never power iteration, which
underestimates. :func:`certified_conv_norm` is that bound for square images and the image backbone's
(:mod:`models.image`) certificates; :func:`conv_norm_bound` is the differentiable sound bound its training uses (the
step size of a 1-Lipschitz layer, a normalised lift). The implicit θ-step solves with F in closed form
(:mod:`models.conv_term`). Example::

    embed = ConvEmbedding(channels=8, side=8, kernel_size=3)
    f = ConvResidualFunction(channels=8, hidden=8, side=8)
    y = f(embed(x))                    # x: (N, 64) → (N, 512)
    f.lipschitz_bound()                # Lip(σ)·‖K₂‖₂·‖K₁‖₂, exact at this size
"""

from __future__ import annotations

import torch
from torch import nn

from models.conv_norms import conv_lipschitz_bound, conv_operator_matrix, conv_operator_norm
from models.conv_term import ConvTerm
from models.lipschitz_layers import conv_operator_norm_bound
from models.residual import ACTIVATIONS, has_closed_form


def image_size(side: int | tuple[int, int]) -> tuple[int, int]:
    """(H, W) of an image given as its side n (square) or as (H, W)."""
    return (side, side) if isinstance(side, int) else (int(side[0]), int(side[1]))


def conv_norm_bound(kernel: torch.Tensor, side: int | tuple[int, int]) -> torch.Tensor:
    """A sound upper bound on ‖·‖₂ of the zero-padded ('same', stride 1) convolution with ``kernel`` on C×H×W
    images that is **differentiable**, for training: the step size τ ≤ 2/B² of a 1-Lipschitz layer, a lift divided
    by its bound. The exact norm of the circular convolution on the (H + k − 1)×(W + k − 1) grid, which contains the
    zero-padded one as a restriction (:func:`models.lipschitz_layers.conv_operator_norm_bound`; Sedghi, Gupta &
    Long, 2019). Certificates use :func:`certified_conv_norm`."""
    return conv_operator_norm_bound(kernel, image_size(side))


def certified_conv_norm(kernel: torch.Tensor, side: int | tuple[int, int]) -> float:
    """The sound conv norm of every certificate of the image backbone: on square images
    :func:`models.conv_norms.conv_lipschitz_bound` (exact while the operator is small, else Gram iteration), on
    non-square ones :func:`conv_norm_bound`. The one place to change for another provable bound."""
    height, width = image_size(side)
    if height == width:
        return conv_lipschitz_bound(kernel, height)
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
        """The convolution's operator norm, exact or a sound upper bound (:func:`conv_lipschitz_bound`; the bias
        does not change the Lipschitz constant)."""
        return conv_lipschitz_bound(self.conv.weight, self.side)


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
        """Lip(F) ≤ Lip(σ)·‖K₂‖₂·‖K₁‖₂ with the operator norms of the two convolutions, exact or sound upper bounds
        (:func:`certified_conv_norm`: :func:`conv_lipschitz_bound` on square images)."""
        norm2 = certified_conv_norm(self.conv2.weight, self.size)
        return self.activation_lipschitz * norm2 * certified_conv_norm(self.conv1.weight, self.size)


__all__ = ["ConvEmbedding", "ConvResidualFunction", "certified_conv_norm", "conv_norm_bound", "conv_operator_matrix",
           "conv_operator_norm", "image_size"]
