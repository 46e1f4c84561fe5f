"""Hamiltonian (symplectic) networks: residual steps that are symplectic Euler steps of a separable Hamiltonian.

Murari, "Neural Networks as Dynamical Systems: Hamiltonian and 1-Lipschitz Networks", "Hamiltonian
NNs / Symplectic NN" and "Example of a Hamiltonian/Symplectic NN". The state x = (q, p) ∈ ℝ^{2d} is split in
halves; with H¹(q, p) = K(p) = uᵀγ(Ap + a) and H²(q, p) = U(q) = vᵀγ(Bq + b), σ = γ', each step composes the exact
flows of H² and H¹ over a time h::

    p ← p − h∇U(q),    ∇U(q) = Bᵀdiag(v)σ(Bq + b)
    q ← q + h∇K(p),    ∇K(p) = Aᵀdiag(u)σ(Ap + a)

Each half-step is a shear, so the step is symplectic, volume preserving (det J = 1) and exactly invertible
(:meth:`SymplecticEulerStep.inverse`). Example::

    step = SymplecticEulerStep(width=8, hidden=16, h=0.5)
    y = step(x)                      # x: (N, 8) = (q, p)
    x_again = step.inverse(y)        # up to rounding
    step.lipschitz_bound()           # sound bound from exact spectral norms

Lipschitz bound (all norms exact, in float64: :mod:`models.spectral_norms`). For
∇K(p) − ∇K(p') = Aᵀ diag(u) D A (p − p'), D diagonal with |D_ii| ≤ Lip(σ) (mean value theorem per unit), writing
A = |U|^{-1/2}(|U|^{1/2}A)::

    ℓ_K = Lip(∇K) ≤ Lip(σ)·‖diag(√|u|) A‖₂²   (≤ Lip(σ)·max|u|·‖A‖₂², the cruder bound),   ℓ_U likewise.

A shear (q, p) ↦ (q + g(p), p) with Lip(g) ≤ ℓ maps a difference with block norms (α, β) = (‖Δq‖, ‖Δp‖) to one
with block norms at most (α + ℓβ, β), i.e. it is dominated entrywise by the non-negative matrix [[1, ℓ], [0, 1]].
Non-negative matrices preserve that domination, so the whole step is bounded by the exact 2×2 norm::

    Lip(step) ≤ ‖ [[1, hℓ_K], [0, 1]] · [[1, 0], [hℓ_U, 1]] ‖₂ ≤ (1 + hℓ_K)(1 + hℓ_U).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.conv import certified_conv_norm
from models.residual import ACTIVATIONS
from models.spectral_norms import derived_matrix, exact_spectral_norm


def potential_gradient(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor,
                       activation: nn.Module) -> torch.Tensor:
    """∇K(p) = Aᵀdiag(u)σ(Ap + a), the gradient of K(p) = uᵀγ(Ap + a) with σ = γ' (Murari, "Example of a
    Hamiltonian/Symplectic NN"); ∇U(q) = Bᵀdiag(v)σ(Bq + b) is the same map with (B, b, v)."""
    return (activation(nn.functional.linear(x, weight, bias)) * scale) @ weight


def momentum_update(p: torch.Tensor, grad_u: torch.Tensor, h: float) -> torch.Tensor:
    """p ← p − h∇U(q): the exact time-h flow of H²(q, p) = U(q) (Murari, φ_{H²,t})."""
    return p - h * grad_u


def position_update(q: torch.Tensor, grad_k: torch.Tensor, h: float) -> torch.Tensor:
    """q ← q + h∇K(p): the exact time-h flow of H¹(q, p) = K(p) (Murari, φ_{H¹,t})."""
    return q + h * grad_k


def symplectic_step_lipschitz(lip_k: float, lip_u: float, h: float) -> float:
    """‖[[1, hℓ_K], [0, 1]]·[[1, 0], [hℓ_U, 1]]‖₂: a sound bound on Lip of one step p ← p − h∇U(q),
    q ← q + h∇K(p) when Lip(∇K) ≤ ℓ_K and Lip(∇U) ≤ ℓ_U (module docstring; never above (1 + hℓ_K)(1 + hℓ_U)).

    In closed form: the matrix M = [[1 + ab, a], [b, 1]] (a = hℓ_K, b = hℓ_U) has det M = 1, so its singular values
    satisfy σ₁² + σ₂² = ‖M‖_F² = 2 + g and σ₁σ₂ = 1, with g = (a + b)² + (ab)² ≥ 0; hence
    σ₁² = (2 + g + √(g(g + 4)))/2, computed without cancellation (every term is non-negative)."""
    a, b = h * lip_k, h * lip_u
    g = (a + b) ** 2 + (a * b) ** 2
    return math.sqrt((2.0 + g + math.sqrt(g * (g + 4.0))) / 2.0)


class GradientPotential(nn.Module):
    """The gradient field x ↦ Wᵀdiag(s)σ(Wx + c) of the potential sᵀγ(Wx + c) (∇K with (A, a, u), ∇U with (B, b, v))."""

    def __init__(self, dim: int, hidden: int, activation: str = "tanh"):
        super().__init__()
        act_cls, self.activation_lipschitz = ACTIVATIONS[activation]
        self.activation = act_cls()
        lin = nn.Linear(dim, hidden)  # PyTorch's default (Kaiming-uniform) initialisation for W and c
        self.weight = nn.Parameter(lin.weight.detach().clone())
        self.bias = nn.Parameter(lin.bias.detach().clone())
        self.scale = nn.Parameter(torch.empty(hidden).uniform_(-1.0, 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return potential_gradient(x, self.weight, self.bias, self.scale, self.activation)

    def bound_matrix(self) -> torch.Tensor:
        """diag(√|s|)·W in float64: the matrix whose exact norm bounds Lip(∇K) (module docstring)."""

        def build() -> torch.Tensor:
            return self.weight.detach().double() * self.scale.detach().double().abs().sqrt()[:, None]

        return derived_matrix(self, "scaled weight", build)

    def spectral_norm_matrices(self) -> list[torch.Tensor]:
        """The matrices whose exact norms :meth:`lipschitz_bound` takes (for ``batched_spectral_norms``)."""
        return [self.bound_matrix()]

    def lipschitz_bound(self) -> float:
        """Lip(σ)·‖diag(√|s|) W‖₂² (exact norm, float64) — see the module docstring."""
        return self.activation_lipschitz * exact_spectral_norm(self.bound_matrix()) ** 2


def conv_potential_gradient(x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor,
                            activation: nn.Module) -> torch.Tensor:
    """∇K(p) = Aᵀdiag(u)σ(Ap + a) with A a zero-padded convolution (Murari, "Example of a Hamiltonian/Symplectic
    NN", with the convolutional form of "Adapting Gradient Flows to Convolutional Neural Networks"): Ap + a is
    conv2d(p, K) + a, diag(u) scales each hidden channel, Aᵀ is conv_transpose2d with the same kernel. ``x`` is an
    image batch (N, C, H, W)."""
    pad = kernel.shape[-1] // 2
    hidden = activation(nn.functional.conv2d(x, kernel, bias, padding=pad)) * scale[:, None, None]
    return nn.functional.conv_transpose2d(hidden, kernel, padding=pad)


class ConvGradientPotential(nn.Module):
    """:class:`GradientPotential` with a convolution: x ↦ Aᵀdiag(u)σ(A⋆x + a) on flat states (N, C·H·W), A a k×k
    convolution from C to ``hidden`` channels, u one scale per hidden channel (:func:`conv_potential_gradient`).

    Lip ≤ Lip(σ)·‖diag(√|u|)A‖₂² as for the dense potential (module docstring), diag(√|u|)A being the convolution
    whose kernel has output channel c scaled by √|u_c|; its norm from :func:`models.conv.certified_conv_norm`."""

    def __init__(self, channels: int, hidden: int, size: tuple[int, int], kernel_size: int = 3,
                 activation: str = "tanh"):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd ('same' padding), got {kernel_size}")
        act_cls, self.activation_lipschitz = ACTIVATIONS[activation]
        self.activation = act_cls()
        self.channels, self.size = channels, tuple(size)
        conv = nn.Conv2d(channels, hidden, kernel_size)  # PyTorch's default initialisation for A and a
        self.weight = nn.Parameter(conv.weight.detach().clone())
        self.bias = nn.Parameter(conv.bias.detach().clone())
        self.scale = nn.Parameter(torch.empty(hidden).uniform_(-1.0, 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = x.reshape(x.shape[0], self.channels, *self.size)
        return conv_potential_gradient(image, self.weight, self.bias, self.scale, self.activation).flatten(1)

    def bound_kernel(self) -> torch.Tensor:
        """diag(√|u|)·A as a kernel, in float64."""
        scale = self.scale.detach().double().abs().sqrt()
        return self.weight.detach().double() * scale[:, None, None, None]

    def lipschitz_bound(self) -> float:
        """Lip(σ)·‖diag(√|u|)A‖₂², the norm exact while small, else a sound bound."""
        return self.activation_lipschitz * certified_conv_norm(self.bound_kernel(), self.size) ** 2


class SymplecticEulerStep(nn.Module):
    """One symplectic Euler step on x = (q, p): p ← p − h∇U(q), then q ← q + h∇K(p) (Murari).

    Args:
        width: state width 2d (even); q = x[:, :d], p = x[:, d:].
        hidden: number of units of each potential (rows of A and of B).
        h: step size.
        activation: σ = γ' (a name of ``models.residual.ACTIVATIONS``).
        kinetic, potential: existing :class:`GradientPotential` modules to share (``shared_weights``).
    """

    def __init__(self, width: int, hidden: int, h: float, activation: str = "tanh",
                 kinetic: GradientPotential | None = None, potential: GradientPotential | None = None):
        super().__init__()
        if width % 2:
            raise ValueError(f"a Hamiltonian state splits into (q, p) halves: width must be even, got {width}")
        self.half = width // 2
        self.h = h
        self.potential = potential if potential is not None else GradientPotential(self.half, hidden, activation)
        self.kinetic = kinetic if kinetic is not None else GradientPotential(self.half, hidden, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, p = x[:, : self.half], x[:, self.half :]
        p = momentum_update(p, self.potential(q), self.h)
        q = position_update(q, self.kinetic(p), self.h)
        return torch.cat([q, p], dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """The exact inverse: q ← q − h∇K(p), then p ← p + h∇U(q) (each shear undone in reverse order)."""
        q, p = y[:, : self.half], y[:, self.half :]
        q = position_update(q, self.kinetic(p), -self.h)
        p = momentum_update(p, self.potential(q), -self.h)
        return torch.cat([q, p], dim=1)

    def lipschitz_bound(self) -> float:
        bound = symplectic_step_lipschitz(self.kinetic.lipschitz_bound(), self.potential.lipschitz_bound(), self.h)
        if not math.isfinite(bound):
            raise ValueError(f"Hamiltonian step bound is not finite ({bound})")
        return bound


__all__ = [
    "ConvGradientPotential",
    "GradientPotential",
    "SymplecticEulerStep",
    "conv_potential_gradient",
    "momentum_update",
    "position_update",
    "potential_gradient",
    "symplectic_step_lipschitz",
]
