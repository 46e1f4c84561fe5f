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
underestimates. Example::

    embed = ConvEmbedding(channels=8, side=8, kernel_size=3)
    f = ConvResidualFunction(channels=8, hidden=8, side=8)
    y = f(embed(x))                    # x: (N, 64) → (N, 512)
    f.lipschitz_bound()                # Lip(σ)·‖K₂‖₂·‖K₁‖₂, exact at this size
"""

from __future__ import annotations

import torch
from torch import nn

from models.conv_norms import conv_lipschitz_bound, conv_operator_matrix, conv_operator_norm
from models.residual import ACTIVATIONS


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
    """F(x) = K₂ ⋆ σ(K₁ ⋆ x + b₁) + b₂ on a flat state (N, channels·n²), ``hidden`` intermediate channels.

    Same interface as :class:`models.residual.ResidualFunction` (:meth:`weights` once per step, with graph;
    :meth:`apply` pure), so :class:`models.steps.ExplicitStep` and :class:`models.steps.ThetaStep` (and its
    solvers and implicit backward) use it unchanged."""

    def __init__(self, channels: int, hidden: int, side: int, kernel_size: int = 3, activation: str = "tanh"):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd ('same' padding), got {kernel_size}")
        act_cls, self.activation_lipschitz = ACTIVATIONS[activation]
        self.activation = act_cls()
        self.channels, self.side, self.pad = channels, side, kernel_size // 2
        self.conv1 = nn.Conv2d(channels, hidden, kernel_size)
        self.conv2 = nn.Conv2d(hidden, channels, kernel_size)

    def weights(self) -> dict[str, torch.Tensor]:
        return {"w1": self.conv1.weight, "b1": self.conv1.bias, "w2": self.conv2.weight, "b2": self.conv2.bias}

    def apply(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        image = x.reshape(x.shape[0], self.channels, self.side, self.side)
        hidden = self.activation(nn.functional.conv2d(image, params["w1"], params["b1"], padding=self.pad))
        return nn.functional.conv2d(hidden, params["w2"], params["b2"], padding=self.pad).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(self.weights(), x)

    def lipschitz_bound(self) -> float:
        """Lip(F) ≤ Lip(σ)·‖K₂‖₂·‖K₁‖₂ with the operator norms of the two convolutions, exact or sound upper bounds
        (:func:`conv_lipschitz_bound`)."""
        norm2 = conv_lipschitz_bound(self.conv2.weight, self.side)
        return self.activation_lipschitz * norm2 * conv_lipschitz_bound(self.conv1.weight, self.side)


__all__ = ["ConvEmbedding", "ConvResidualFunction", "conv_operator_matrix", "conv_operator_norm"]
