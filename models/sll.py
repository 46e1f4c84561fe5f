"""SDP-based Lipschitz layers (family ``sll``): Araujo, Havens, Delattre, Allauzen & Hu, "A Unified Algebraic
Perspective on Lipschitz Neural Networks", ICLR 2023 (Theorem 3, the SLL layer).

The residual layer::

    x ← x − 2·Wᵀ T⁻¹ σ(Wx + b),    T = diag(t),  t_i = Σ_j |WWᵀ|_ij · q_j / q_i,  q > 0 learned,

is 1-Lipschitz for any W ∈ ℝ^{hidden×width} and any monotone σ with slope ≤ 1. It generalises the 1-Lipschitz
gradient-flow step x − τWᵀσ(Wx + b), τ ≤ 2/‖W‖₂² (Murari, "Euler step (1-Lipschitz)", family ``lipschitz``):
the scalar step 2/‖W‖₂² becomes the diagonal 2T⁻¹, which needs no spectral norm at all (T ⪰ WWᵀ by a scaled
Gershgorin argument), and is the layer Prach et al. ("1-Lipschitz Layers Compared", 2023) rank among the best.

**The bound, soundly.** With M = T^{-1/2}W and D = diag(σ') ∈ [0, 1] (diagonal, so it commutes with T),
the Jacobian is J = I − 2WᵀT^{-1/2}DT^{-1/2}W = I − 2MᵀDM: symmetric, eigenvalues in [1 − 2ρ, 1] with
ρ = ‖M‖₂². So Lip ≤ max(1, 2ρ − 1), and ρ ≤ 1 by the theorem; :meth:`SDPLipschitzLayer.lipschitz_bound` computes
ρ exactly (float64 SVD), so rounding can never make the reported bound optimistic.
"""

from __future__ import annotations

import torch
from torch import nn

from models.residual import ACTIVATIONS
from models.spectral_norms import exact_spectral_norm


def sll_rescaling(weight: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """t_i = Σ_j |WWᵀ|_ij · q_j / q_i with q = exp(log q): the diagonal of T in Araujo et al., Theorem 3, which
    dominates WWᵀ (T − WWᵀ ⪰ 0)."""
    q = log_q.exp()
    gram = (weight @ weight.T).abs()
    return (gram * q[None, :]).sum(dim=1) / q


def sll_step(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, t: torch.Tensor,
             activation: nn.Module) -> torch.Tensor:
    """x − 2·Wᵀ T⁻¹ σ(Wx + b): the SDP-based Lipschitz layer (Araujo et al., ICLR 2023, Theorem 3)."""
    return x - 2 * (activation(nn.functional.linear(x, weight, bias)) / t) @ weight


class SDPLipschitzLayer(nn.Module):
    """Dense SLL layer on a ``width``-dimensional state with ``hidden`` units (module docstring)."""

    def __init__(self, width: int, hidden: int, activation: str = "relu"):
        super().__init__()
        act_cls, self.activation_lipschitz = ACTIVATIONS[activation]
        if self.activation_lipschitz > 1:
            raise ValueError(f"the SLL layer needs an activation with slope ≤ 1, not {activation!r}")
        self.activation = act_cls()
        lin = nn.Linear(width, hidden)
        self.weight = nn.Parameter(lin.weight.detach().clone())
        self.bias = nn.Parameter(lin.bias.detach().clone())
        self.log_q = nn.Parameter(torch.zeros(hidden))

    def rescaling(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The diagonal of T, in ``dtype`` (default: the weights')."""
        weight, log_q = self.weight.to(dtype or self.weight.dtype), self.log_q.to(dtype or self.weight.dtype)
        # a zero row of W gives t_i = 0 and a zero term σ(b_i)·0/0: guard the division, the term is 0 anyway
        return sll_rescaling(weight, log_q).clamp_min(torch.finfo(weight.dtype).tiny)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sll_step(x, self.weight, self.bias, self.rescaling(), self.activation)

    def lipschitz_bound(self) -> float:
        """max(1, 2sρ − 1), ρ = ‖T^{-1/2}W‖₂² by SVD in float64 from the T the forward pass uses, s the slope of σ."""
        with torch.no_grad():
            t = self.rescaling(torch.float64)
            rho = exact_spectral_norm(self.weight.double() / t.sqrt()[:, None]) ** 2
            return max(1.0, 2 * self.activation_lipschitz * rho - 1.0)


__all__ = ["SDPLipschitzLayer", "sll_rescaling", "sll_step"]
