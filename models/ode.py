"""The neural ODE model of Reshniak & Webster, "Robust learning with implicit residual networks", §3,
eq. 11, discretised by θ-method layers (family ``ode``).

With x ∈ ℝⁿ the input, the hidden state y ∈ ℝ²ⁿ evolves by::

    ẏ(t) = γ₂ σ(γ₁ y(t) + b₁),    t ∈ [0, T],    y(0) = (x, x)

(γ₁ ∈ ℝ^{m×2n}, b₁ ∈ ℝᵐ, γ₂ ∈ ℝ^{2n×m}; the seed uses T = 10, m = 100, ReLU). The weights are drawn from the
standard normal distribution and normalised by the spectral radius ρ of γ₂γ₁ ∈ ℝ^{2n×2n}:
γ₁ ← γ₁/√ρ, γ₂ ← γ₂/√ρ, so that ρ(γ₂γ₁) = 1; b₁ = 0 (Reshniak & Webster, Example 1). The interval is covered by
``depth`` θ-steps of size h = T/depth (:class:`models.steps.ThetaStep`, Reshniak & Webster, eq. 7), weights per layer
or shared, and a linear head reads the final state (the seed reads one coordinate for regression; a classifier needs
logits). Example::

    field = ODEVectorField(state=4, hidden=100, activation="relu")
    field(torch.randn(8, 4))          # γ₂σ(γ₁y + b₁), shape (8, 4)
    field.lipschitz_bound()           # Lip(σ)·‖γ₂‖₂·‖γ₁‖₂, exact norms
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.residual import ACTIVATIONS, DenseTerm, has_closed_form
from models.spectral_norms import exact_spectral_norm

DEFAULT_HIDDEN = 100  # Reshniak & Webster, Example 1: γ₁ ∈ ℝ^{100×2}
DEFAULT_T = 10.0  # Reshniak & Webster, eq. 11: t ∈ [0, 10]


def spectral_radius_normalize_(gamma1: torch.Tensor, gamma2: torch.Tensor) -> float:
    """γ₁ ← γ₁/√ρ, γ₂ ← γ₂/√ρ in place, ρ the spectral radius of γ₂γ₁ (Reshniak & Webster, Example 1); returns ρ.

    Afterwards ρ(γ₂γ₁) = 1. ρ is computed in float64 from the eigenvalues of the (small, square) product."""
    with torch.no_grad():
        rho = float(torch.linalg.eigvals(gamma2.double() @ gamma1.double()).abs().max())
        if rho > 0 and math.isfinite(rho):
            scale = 1.0 / math.sqrt(rho)
            gamma1.mul_(scale)
            gamma2.mul_(scale)
    return rho


class ODEVectorField(nn.Module):
    """F(y) = γ₂σ(γ₁y + b₁) (Reshniak & Webster, eq. 11), with the :class:`models.residual.ResidualFunction` interface
    that :class:`models.steps.ThetaStep` and its solvers use: :meth:`weights` materialises the weights once (with
    their graph) and :meth:`apply` is a pure function of them."""

    def __init__(self, state: int, hidden: int = DEFAULT_HIDDEN, activation: str = "relu"):
        super().__init__()
        act_cls, self.activation_lipschitz = ACTIVATIONS[activation]
        self.activation = act_cls()
        self.gamma1 = nn.Parameter(torch.randn(hidden, state))
        self.bias1 = nn.Parameter(torch.zeros(hidden))
        self.gamma2 = nn.Parameter(torch.randn(state, hidden))
        spectral_radius_normalize_(self.gamma1, self.gamma2)

    def weights(self) -> dict[str, torch.Tensor]:
        return {"w1": self.gamma1, "b1": self.bias1, "w2": self.gamma2}

    def apply(self, params: dict[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(self.activation(nn.functional.linear(y, params["w1"], params["b1"])), params["w2"])

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.apply(self.weights(), y)

    def implicit_term(self, params: dict[str, torch.Tensor], coeff: float) -> DenseTerm | None:
        """coeff·F = coeff·γ₂σ(γ₁y + b₁) as a :class:`models.residual.DenseTerm` (None: no closed form of σ')."""
        if not has_closed_form(self.activation):
            return None
        return DenseTerm.fold(self.activation, params["w1"], params["b1"], params["w2"], None, coeff)

    def spectral_norm_matrices(self) -> list[torch.Tensor]:
        """The matrices whose exact norms :meth:`lipschitz_bound` takes (for ``batched_spectral_norms``)."""
        return [self.gamma1, self.gamma2]

    def lipschitz_bound(self) -> float:
        """Lip(F) ≤ Lip(σ)·‖γ₂‖₂·‖γ₁‖₂, exact spectral norms (float64)."""
        with torch.no_grad():
            return self.activation_lipschitz * exact_spectral_norm(self.gamma2) * exact_spectral_norm(self.gamma1)


class AugmentedInput(nn.Module):
    """x ↦ y(0) = (x, x) ∈ ℝ²ⁿ, the augmented initial state of Reshniak & Webster (eq. 11). No parameters; the map is
    [I; I], whose spectral norm is exactly √2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x], dim=1)

    def lipschitz_bound(self) -> float:
        return math.sqrt(2.0)


__all__ = ["AugmentedInput", "DEFAULT_HIDDEN", "DEFAULT_T", "ODEVectorField", "spectral_radius_normalize_"]
