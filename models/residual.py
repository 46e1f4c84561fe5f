"""The residual function F of a residual step, and the spectral normalisation that bounds its Lipschitz constant.

F(x) = W₂σ(W₁x + b₁) + b₂. With ``spectral=(α, β)`` it becomes the localised field of Reshniak & Webster
(poster "Robust learning with implicit residual networks", seed 001, "Spectral normalization")::

    F^{α,β}(x) = (α+β)/2 · x + (β−α)/2 · S(ϑ) ⊙ F̃(x),    F̃ with W/‖W‖₂,

so every eigenvalue of ∂F/∂x lies in the disc centred at (α+β)/2 with radius (β−α)/2.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

ACTIVATIONS: dict[str, tuple[type[nn.Module], float]] = {
    # name: (module, Lipschitz constant)
    "tanh": (nn.Tanh, 1.0),
    "relu": (nn.ReLU, 1.0),
    "softplus": (nn.Softplus, 1.0),
    "sigmoid": (nn.Sigmoid, 0.25),
}


def exact_spectral_norm(weight: torch.Tensor) -> torch.Tensor:
    """‖W‖₂ by SVD in float64 — exact, unlike power iteration, which underestimates it."""
    return torch.linalg.matrix_norm(weight.detach().double(), ord=2).to(weight.dtype)


class SpectralNormalization(nn.Module):
    """Parametrization W ↦ W/‖W‖₂ (Miyato et al., "Spectral normalization for GANs", 2018).

    In training, ‖W‖₂ is estimated by one power-iteration step per call (cheap; gradients flow through σ = uᵀWv).
    In eval mode the exact norm is used, so an evaluated network is exactly what its Lipschitz bound describes.
    """

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        out_f, in_f = weight.shape
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("u", nn.functional.normalize(torch.randn(out_f, generator=gen), dim=0).to(weight.dtype))
        self.register_buffer("v", nn.functional.normalize(torch.randn(in_f, generator=gen), dim=0).to(weight.dtype))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return weight / torch.linalg.matrix_norm(weight, ord=2)
        with torch.no_grad():
            v = nn.functional.normalize(weight.T @ self.u, dim=0, eps=1e-12)
            u = nn.functional.normalize(weight @ v, dim=0, eps=1e-12)
            self.u.copy_(u)
            self.v.copy_(v)
        # σ = uᵀWv from the local u, v, not the buffers: a second forward before backward (the stochastic
        # regularizer runs the model on clean and perturbed inputs) updates the buffers in place.
        sigma = torch.dot(u, weight @ v)
        return weight / sigma


class ResidualFunction(nn.Module):
    """F(x) = W₂σ(W₁x + b₁) + b₂, optionally spectrally normalised and localised to the disc of [α, β].

    Solvers call F many times per step with the same weights, so :meth:`weights` materialises the (parametrised)
    weights once, *with* their autograd graph, and :meth:`apply` is a pure function of them. This avoids the
    known pitfall of caching normalised weights under ``no_grad`` (their parameters would silently never train).
    """

    def __init__(self, width: int, hidden: int, activation: str = "tanh", spectral: tuple[float, float] | None = None):
        super().__init__()
        act_cls, self.activation_lipschitz = ACTIVATIONS[activation]
        self.activation = act_cls()
        self.lin1 = nn.Linear(width, hidden)
        self.lin2 = nn.Linear(hidden, width)
        self.spectral = spectral
        if spectral is not None:
            parametrize.register_parametrization(self.lin1, "weight", SpectralNormalization(self.lin1.weight))
            parametrize.register_parametrization(self.lin2, "weight", SpectralNormalization(self.lin2.weight))
            self.scale_logit = nn.Parameter(torch.zeros(width))  # ϑ of F^{α,β}

    def weights(self) -> dict[str, torch.Tensor]:
        params = {"w1": self.lin1.weight, "b1": self.lin1.bias, "w2": self.lin2.weight, "b2": self.lin2.bias}
        if self.spectral is not None:
            params["scale"] = torch.sigmoid(self.scale_logit)
        return params

    def apply(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        out = nn.functional.linear(
            self.activation(nn.functional.linear(x, params["w1"], params["b1"])), params["w2"], params["b2"]
        )
        if self.spectral is None:
            return out
        return localized_field(x, out, params["scale"], *self.spectral)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(self.weights(), x)

    def lipschitz_bound(self) -> float:
        """Sound bound on Lip(F) from exact spectral norms (float64)."""
        with torch.no_grad():
            lip_body = float(exact_spectral_norm(self.lin2.weight) * exact_spectral_norm(self.lin1.weight))
            lip_body *= self.activation_lipschitz
            if self.spectral is None:
                return lip_body
            lower, upper = self.spectral
            scale = float(torch.sigmoid(self.scale_logit.double()).max())
            return abs(lower + upper) / 2 + (upper - lower) / 2 * scale * lip_body


def localized_field(
    x: torch.Tensor, normalised: torch.Tensor, scale: torch.Tensor, lower: float, upper: float
) -> torch.Tensor:
    """F^{α,β}(x) = (α+β)/2·x + (β−α)/2·S(ϑ)⊙F̃(x) — Reshniak & Webster, poster "Robust learning with implicit
    residual networks" (seed 001), "Spectral normalization"."""
    return (lower + upper) / 2 * x + (upper - lower) / 2 * scale * normalised
