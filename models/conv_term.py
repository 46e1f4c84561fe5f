"""The implicit term hθF of a θ-step with a convolutional F, in closed form: the convolutional twin of
:class:`models.residual.DenseTerm`.

For F(z) = K₂ ⋆ σ(K₁ ⋆ z + b₁) + b₂ (zero padding k//2, stride 1) the θ-step of Reshniak & Webster, "Robust learning
with implicit residual networks" (eq. 7), solves z = base + T(z) with T = hθF, and its implicit backward (eq. 10–11)
needs VJPs of T at the fixed point. With the step's coefficient folded into K₂ and b₂ once per step, every evaluation
inside the solver loops is two convolutions and σ, and every VJP is two transposed convolutions — no autograd graph
is recorded::

    T(z)           = K₂' ⋆ σ(K₁ ⋆ z + b₁) + b₂'                     conv2d, σ, conv2d
    (∂T/∂z)ᵀ v     = K₁ᵀ ⋆ (σ'(a) ⊙ (K₂'ᵀ ⋆ v))                    conv_transpose2d twice (the adjoints)
    (∂T/∂K₁)ᵀ g    = ∇_K conv2d(z; ·)[σ'(a) ⊙ (K₂'ᵀ ⋆ g)]          torch.nn.grad.conv2d_weight
    (∂T/∂K₂')ᵀ g   = ∇_K conv2d(σ(a); ·)[g]

a = K₁ ⋆ y + b₁ at the fixed point y. States are flat (batch, C·H·W) as everywhere in :mod:`models.steps`; each map
reshapes them to images (a view) and back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.functional import conv2d, conv_transpose2d

from models.residual import ACTIVATION_DERIVATIVES, ACTIVATION_LIPSCHITZ, ACTIVATIONS_IN_PLACE


@dataclasses.dataclass(frozen=True)
class ConvTerm:
    """T(z) = K₂ ⋆ σ(K₁ ⋆ z + b₁) + b₂ on flat states (batch, C·H·W): :meth:`fixed_point_map` and
    :meth:`linearize` without autograd (module docstring). :meth:`tensors` are the folded weights: the implicit
    adjoint returns gradients for them and autograd carries those back through the folding to the parameters."""

    activation: nn.Module
    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor | None
    image: tuple[int, int, int]  # (C, H, W) of the state
    padding: int

    @staticmethod
    def fold(
        activation: nn.Module,
        w1: torch.Tensor,
        b1: torch.Tensor,
        w2: torch.Tensor,
        b2: torch.Tensor | None,
        coeff: float,
        image: tuple[int, int, int],
    ) -> ConvTerm:
        """coeff·(K₂ ⋆ σ(K₁ ⋆ z + b₁) + b₂) as a ConvTerm (coeff folded into K₂ and b₂, with their graph)."""
        if coeff != 1:
            w2, b2 = coeff * w2, None if b2 is None else coeff * b2
        return ConvTerm(activation, w1, b1, w2, b2, image, w1.shape[-1] // 2)

    def tensors(self) -> dict[str, torch.Tensor]:
        names = ("w1", "b1", "w2") if self.b2 is None else ("w1", "b1", "w2", "b2")
        return {name: getattr(self, name) for name in names}

    def with_tensors(self, tensors: dict[str, torch.Tensor]) -> ConvTerm:
        return dataclasses.replace(self, **tensors)

    def lipschitz_bound(self) -> float:
        """Sound bound on Lip(T) = Lip(σ)·‖K₂‖₂·‖K₁‖₂ of the folded weights (hθ included), each convolution's norm
        from :func:`models.conv.certified_conv_norm` (what the ``auto`` solver choice reads)."""
        from models.conv import certified_conv_norm  # models.conv builds ConvTerms: imported when first needed

        size = self.image[1:]
        with torch.no_grad():
            norm1, norm2 = certified_conv_norm(self.w1, size), certified_conv_norm(self.w2, size)
        return ACTIVATION_LIPSCHITZ[type(self.activation)] * norm1 * norm2

    def images(self, z: torch.Tensor) -> torch.Tensor:
        return z.view(z.shape[0], *self.image)

    def fixed_point_map(self, base: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """z ↦ base + T(z), for flat states (batch, C·H·W)."""
        bias = self.images(base) if self.b2 is None else self.images(base) + self.b2[:, None, None]
        activation = ACTIVATIONS_IN_PLACE.get(type(self.activation), self.activation)
        w1, b1, w2, pad = self.w1, self.b1, self.w2, self.padding

        def f(z: torch.Tensor) -> torch.Tensor:
            hidden = activation(conv2d(self.images(z), w1, b1, padding=pad))
            return conv2d(hidden, w2, padding=pad).add_(bias).flatten(1)

        return f

    def linearize(self, y: torch.Tensor) -> ConvLinearization:
        """The derivatives of T at the flat state y."""
        image = self.images(y)
        pre = conv2d(image, self.w1, self.b1, padding=self.padding)
        post = self.activation(pre)
        slope = ACTIVATION_DERIVATIVES[type(self.activation)](self.activation, pre, post)
        return ConvLinearization(self, image, post, slope)


@dataclasses.dataclass(frozen=True)
class ConvLinearization:
    """Derivatives of a :class:`ConvTerm` at a point y (stored as an image): σ(a) and σ'(a)."""

    term: ConvTerm
    y: torch.Tensor
    post: torch.Tensor
    slope: torch.Tensor

    def _hidden(self, v: torch.Tensor) -> torch.Tensor:
        """σ'(a) ⊙ (K₂ᵀ ⋆ v) for a flat v: the adjoint of the second convolution, then the activation's slope."""
        return conv_transpose2d(self.term.images(v), self.term.w2, padding=self.term.padding).mul_(self.slope)

    def vjp(self, v: torch.Tensor) -> torch.Tensor:
        """(∂T/∂z)ᵀv = K₁ᵀ ⋆ (σ'(a) ⊙ (K₂ᵀ ⋆ v)), batched; a new flat tensor (v is not modified)."""
        return conv_transpose2d(self._hidden(v), self.term.w1, padding=self.term.padding).flatten(1)

    def param_vjp(self, g: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        """(∂T(y)/∂γ)ᵀg for the folded weights γ named in ``names``."""
        term, grads = self.term, {}
        pad = term.padding
        if "w1" in names or "b1" in names:
            hidden = self._hidden(g)
            if "w1" in names:
                grads["w1"] = torch.nn.grad.conv2d_weight(self.y, term.w1.shape, hidden, padding=pad)
            if "b1" in names:
                grads["b1"] = hidden.sum((0, 2, 3))
        image = term.images(g)
        if "w2" in names:
            grads["w2"] = torch.nn.grad.conv2d_weight(self.post, term.w2.shape, image, padding=pad)
        if "b2" in names:
            grads["b2"] = image.sum((0, 2, 3))
        return grads


__all__ = ["ConvLinearization", "ConvTerm"]
