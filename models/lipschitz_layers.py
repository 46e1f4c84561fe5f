"""1-Lipschitz networks from gradient flows of convex potentials (family ``lipschitz``).

Murari, "Neural Networks as Dynamical Systems: Hamiltonian and 1-Lipschitz Networks", "Non-expansive
gradient flows", "Euler step (1-Lipschitz", "Neural networks based on gradient flows", "Adapting Gradient Flows to
Convolutional Neural Networks"). With V(x) = 1ᵀγ(Wx + b), γ' = σ, the explicit Euler step of ẋ = −∇V(x)::

    x ← x − τ Wᵀσ(Wx + b),    τ ∈ [0, 2/‖W‖₂²],

is 1-Lipschitz: its Jacobian I − τWᵀDW is symmetric, D = diag(σ') with 0 ≤ σ' ≤ s = Lip(σ), so its eigenvalues lie
in [1 − τs‖W‖₂², 1] ⊂ [−1, 1]. The lecture uses σ = ReLU (s = 1); any monotone σ with slope ≤ 1 works (tanh,
softplus, sigmoid), so all activations of ``models.residual.ACTIVATIONS`` are accepted. The step size is
parameterised as τ = 2·sigmoid(ϑ)/‖W‖₂², with ‖W‖₂ the **exact** norm (SVD in float64) in training *and* eval, so
the trained function is the certified one (no power-iteration underestimate, no train/eval mismatch). Example::

    layer = GradientFlowLayer(width=16, hidden=32)
    y = layer(x)                      # ‖y − y'‖ ≤ ‖x − x'‖
    layer.lipschitz_bound()           # max(1, τ·s·‖W‖₂² − 1) = 1 up to rounding

Convolutional layers (:class:`ConvGradientFlowLayer`) use conv2d followed by conv_transpose2d with the same kernel
(its adjoint: zero padding k//2, stride 1), on a flat state reshaped to (channels, n, n). Their ‖W‖₂ is replaced by
a **sound upper bound** (:func:`conv_operator_norm_bound`): the zero-padded convolution on an n×n image is a
restriction of the circular convolution on an N×N grid with N = n + k − 1 (no wrap-around reaches the image), and
the circular convolution's norm is exactly max_ω ‖K̂(ω)‖₂ over the N² discrete frequencies (Sedghi, Gupta & Long,
"The singular values of convolutional layers", 2019). Since τ uses this upper bound, τ ≤ 2/‖W‖₂² holds for the
true operator.

The embedding and the head are ``nn.Linear`` layers divided by their exact spectral norm
(:class:`ExactSpectralNormalization`), so the network's bound ‖embed‖·Π Lip(layer)·‖head‖ is 1 up to rounding, and
the pairwise certificate of ``evaluation.certified`` applies to the head unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from models.residual import ACTIVATIONS
from models.spectral_norms import exact_spectral_norm


def spectral_norm_exact(weight: torch.Tensor) -> torch.Tensor:
    """‖W‖₂ by SVD in float64, differentiable (the top singular value of a generic W is simple)."""
    return torch.linalg.matrix_norm(weight.double(), ord=2).to(weight.dtype)


def conv_operator_norm_bound(kernel: torch.Tensor, image_size: int | tuple[int, int]) -> torch.Tensor:
    """Sound upper bound on ‖W‖₂ of the zero-padded ('same', stride 1) convolution with ``kernel`` (C'×C×k×k) on
    C×n×n inputs (or C×H×W: ``image_size`` = (H, W)): the exact norm max_ω ‖K̂(ω)‖₂ of the circular convolution on
    the (n + k − 1)² grid, which contains the zero-padded one as a restriction (module docstring). Differentiable;
    computed in float64."""
    k = kernel.shape[-1]
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    grid = (height + k - 1, width + k - 1)
    spectrum = torch.fft.rfft2(kernel.double(), s=grid)  # (C', C, N, N//2+1); real kernel: ω and −ω agree
    blocks = spectrum.permute(2, 3, 0, 1)  # one C'×C matrix per frequency
    return torch.linalg.matrix_norm(blocks, ord=2).amax().to(kernel.dtype)


def gradient_flow_step_size(tau_logit: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """τ = 2·sigmoid(ϑ)/‖W‖₂² ∈ (0, 2/‖W‖₂²): the step-size range of the 1-Lipschitz Euler step (Murari,
    "Euler step (1-Lipschitz)")."""
    return 2 * torch.sigmoid(tau_logit) / norm.square()


def gradient_flow_step(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, tau: torch.Tensor,
                       activation: nn.Module) -> torch.Tensor:
    """x ← x − τWᵀσ(Wx + b): explicit Euler on the negative gradient flow of V(x) = 1ᵀγ(Wx + b), 1-Lipschitz for
    τ ∈ [0, 2/‖W‖₂²] (Murari, "Euler step (1-Lipschitz)", the class ℰ_h)."""
    return x - tau * activation(nn.functional.linear(x, weight, bias)) @ weight


def conv_gradient_flow_step(x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor, tau: torch.Tensor,
                            activation: nn.Module) -> torch.Tensor:
    """x ← x − τ·conv_transpose2d(σ(conv2d(x, K) + b), K): the same step with W the convolution
    (Murari, "Adapting Gradient Flows to Convolutional Neural Networks", Code Snippet 2)."""
    pad = kernel.shape[-1] // 2
    hidden = activation(nn.functional.conv2d(x, kernel, bias, padding=pad))
    return x - tau * nn.functional.conv_transpose2d(hidden, kernel, padding=pad)


def _flow_step_bound(tau: float, norm: float, activation_lipschitz: float) -> float:
    """Lip(x − τWᵀσ(Wx + b)) ≤ max(1, τ·s·‖W‖₂² − 1): eigenvalues of I − τWᵀDW lie in [1 − τs‖W‖₂², 1]."""
    return max(1.0, tau * activation_lipschitz * norm**2 - 1.0)


class GradientFlowLayer(nn.Module):
    """Dense 1-Lipschitz layer x ← x − τWᵀσ(Wx + b), W ∈ ℝ^{hidden×width}, τ = 2·sigmoid(ϑ)/‖W‖₂² (exact norm)."""

    def __init__(self, width: int, hidden: int, activation: str = "relu"):
        super().__init__()
        act_cls, self.activation_lipschitz = ACTIVATIONS[activation]
        self.activation = act_cls()
        lin = nn.Linear(width, hidden)
        self.weight = nn.Parameter(lin.weight.detach().clone())
        self.bias = nn.Parameter(lin.bias.detach().clone())
        self.tau_logit = nn.Parameter(torch.zeros(()))  # τ‖W‖₂² = 1 at initialisation

    def operator_norm(self) -> torch.Tensor:
        return spectral_norm_exact(self.weight)

    def tau(self) -> torch.Tensor:
        return gradient_flow_step_size(self.tau_logit, self.operator_norm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gradient_flow_step(x, self.weight, self.bias, self.tau(), self.activation)

    def spectral_norm_matrices(self) -> list[torch.Tensor]:
        """The matrices whose exact norms :meth:`lipschitz_bound` takes (for ``batched_spectral_norms``)."""
        return [self.weight]

    def lipschitz_bound(self) -> float:
        """max(1, τ·s·‖W‖₂² − 1), with the τ the forward pass uses and ‖W‖₂ recomputed in float64: 1 unless
        rounding pushed τ‖W‖₂² past 2."""
        with torch.no_grad():
            tau = float(self.tau().double())
            return _flow_step_bound(tau, exact_spectral_norm(self.weight), self.activation_lipschitz)


class ConvGradientFlowLayer(nn.Module):
    """Convolutional 1-Lipschitz layer on a flat state (N, channels·H·W): reshape to (channels, H, W), then
    x ← x − τ·conv_transpose2d(σ(conv2d(x, K) + b), K), τ = 2·sigmoid(ϑ)/B(K)², B(K) ≥ ‖conv‖₂
    (:meth:`norm_bound`: :func:`conv_operator_norm_bound`). ``image_size``: n for n×n images, or (H, W)."""

    def __init__(self, channels: int, hidden_channels: int, image_size: int | tuple[int, int], kernel_size: int = 3,
                 activation: str = "relu"):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd ('same' padding), got {kernel_size}")
        act_cls, self.activation_lipschitz = ACTIVATIONS[activation]
        self.activation = act_cls()
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.channels, self.image_size = channels, size
        conv = nn.Conv2d(channels, hidden_channels, kernel_size)
        self.weight = nn.Parameter(conv.weight.detach().clone())
        self.bias = nn.Parameter(conv.bias.detach().clone())
        self.tau_logit = nn.Parameter(torch.zeros(()))

    def norm_bound(self, kernel: torch.Tensor) -> torch.Tensor:
        """B(K) ≥ ‖conv_K‖₂ on this layer's images, differentiable: used for τ and for the bound alike."""
        return conv_operator_norm_bound(kernel, self.image_size)

    def operator_norm(self) -> torch.Tensor:
        return self.norm_bound(self.weight)

    def tau(self) -> torch.Tensor:
        return gradient_flow_step_size(self.tau_logit, self.operator_norm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = x.reshape(x.shape[0], self.channels, *self.image_size)
        return conv_gradient_flow_step(image, self.weight, self.bias, self.tau(), self.activation).flatten(1)

    def lipschitz_bound(self) -> float:
        with torch.no_grad():
            tau = float(self.tau().double())
            norm = float(self.norm_bound(self.weight.double()))
            return _flow_step_bound(tau, norm, self.activation_lipschitz)


class ExactSpectralNormalization(nn.Module):
    """Parametrization W ↦ W/‖W‖₂ with the exact norm (float64 SVD) in training and eval alike."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight / spectral_norm_exact(weight)


def normalized_linear(in_features: int, out_features: int) -> nn.Linear:
    """An ``nn.Linear`` whose weight is W/‖W‖₂ (exactly 1-Lipschitz), still an ``nn.Linear`` for certificates."""
    lin = nn.Linear(in_features, out_features)
    parametrize.register_parametrization(lin, "weight", ExactSpectralNormalization())
    return lin


def square_image_side(input_dim: int) -> int:
    """n with n² = input_dim (single-channel square images, e.g. 64 → 8 for the 8×8 digits)."""
    side = math.isqrt(input_dim)
    if side * side != input_dim:
        raise ValueError(f"conv layers need square single-channel images: input_dim {input_dim} is not a square")
    return side


__all__ = ["ConvGradientFlowLayer", "ExactSpectralNormalization", "GradientFlowLayer", "conv_gradient_flow_step",
           "conv_operator_norm_bound", "gradient_flow_step", "gradient_flow_step_size", "normalized_linear",
           "square_image_side"]
