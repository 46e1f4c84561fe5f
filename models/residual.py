"""The residual function F of a residual step, and the spectral normalisation that bounds its Lipschitz constant.

F(x) = W₂σ(W₁x + b₁) + b₂. With ``spectral=(α, β)`` it becomes the localised field of Reshniak & Webster
(poster "Robust learning with implicit residual networks", "Spectral normalization")::

    F^{α,β}(x) = (α+β)/2 · x + (β−α)/2 · S(ϑ) ⊙ F̃(x),    F̃ with W/‖W‖₂,

so every eigenvalue of ∂F/∂x lies in the disc centred at (α+β)/2 with radius (β−α)/2.

For the solvers of the implicit θ-step, :meth:`ResidualFunction.implicit_term` folds the step's coefficient hθ, the
localisation and the scale into the weights once per step and returns a :class:`DenseTerm`
z ↦ c·z + W₂'σ(W₁z + b₁) + b₂', whose fixed-point map and vector–Jacobian products are a few matrix products with
no autograd in the solver loops (see :mod:`models.steps`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from models.spectral_norms import exact_spectral_norm, spectral_norms

ACTIVATIONS: dict[str, tuple[type[nn.Module], float]] = {
    # name: (module, Lipschitz constant)
    "tanh": (nn.Tanh, 1.0),
    "relu": (nn.ReLU, 1.0),
    "softplus": (nn.Softplus, 1.0),
    "sigmoid": (nn.Sigmoid, 0.25),
}


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

    def implicit_term(self, params: dict[str, torch.Tensor], coeff: float) -> DenseTerm | None:
        """coeff·F as a :class:`DenseTerm`, folded from ``params`` with their graph (None: no analytic form).

        coeff·F(z) = coeff·W₂σ(W₁z + b₁) + coeff·b₂, or with the localisation
        coeff·(α+β)/2·z + (coeff·(β−α)/2·S(ϑ)) ⊙ (W₂σ(W₁z + b₁) + b₂).
        """
        if not has_closed_form(self.activation):
            return None
        if self.spectral is None:
            out_scale, identity = coeff, 0.0
        else:
            lower, upper = self.spectral
            out_scale, identity = coeff * (upper - lower) / 2 * params["scale"], coeff * (lower + upper) / 2
        w1, b1, w2, b2 = params["w1"], params["b1"], params["w2"], params["b2"]
        return DenseTerm.fold(self.activation, w1, b1, w2, b2, out_scale, identity)

    def spectral_norm_matrices(self) -> list[torch.Tensor]:
        """The matrices whose exact norms :meth:`lipschitz_bound` takes (for :func:`batched_spectral_norms`)."""
        return [self.lin1.weight, self.lin2.weight]

    def lipschitz_bound(self) -> float:
        """Sound bound on Lip(F) from exact spectral norms (float64)."""
        # no_grad: a spectrally normalised weight W/‖W‖ is then computed as in lipschitz_bounds' batch (with grad
        # enabled, torch takes ‖W‖ from a full SVD, which can differ from svdvals in the last float32 bits)
        with torch.no_grad():
            lip_body = exact_spectral_norm(self.lin2.weight) * exact_spectral_norm(self.lin1.weight)
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
    residual networks", "Spectral normalization"."""
    return (lower + upper) / 2 * x + (upper - lower) / 2 * scale * normalised


# --- the implicit term of a θ-step in closed form ---------------------------------------------------------------


ACTIVATION_LIPSCHITZ: dict[type[nn.Module], float] = {module: lip for module, lip in ACTIVATIONS.values()}

ACTIVATION_DERIVATIVES: dict[type[nn.Module], Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    # σ'(a) from the module, the pre-activation a and σ(a), as autograd's backward of the module computes it
    nn.Tanh: lambda act, pre, post: 1 - post * post,
    nn.ReLU: lambda act, pre, post: (post > 0).to(post.dtype),
    nn.Sigmoid: lambda act, pre, post: post * (1 - post),
    nn.Softplus: lambda act, pre, post: torch.where(pre * act.beta > act.threshold, 1.0, torch.sigmoid(pre * act.beta)),
}


ACTIVATIONS_IN_PLACE: dict[type[nn.Module], Callable[[torch.Tensor], torch.Tensor]] = {
    # σ applied in place to a fresh pre-activation (no module call, no allocation) inside the solver loops
    nn.Tanh: torch.Tensor.tanh_,
    nn.ReLU: torch.Tensor.relu_,
    nn.Sigmoid: torch.Tensor.sigmoid_,
}


def has_closed_form(activation: nn.Module) -> bool:
    """Whether :class:`DenseTerm` knows σ' of this activation module."""
    return type(activation) in ACTIVATION_DERIVATIVES


@dataclasses.dataclass(frozen=True)
class DenseTerm:
    """The term T(z) = c·z + W₂σ(W₁z + b₁) + b₂ of a θ-step (T = hθF with the weights folded), for states z of
    shape (batch, width).

    Solver loops use :meth:`fixed_point_map` (one ``linear``, σ and one ``addmm`` per evaluation) and
    :meth:`linearize` (σ'(a) once; then each VJP v ↦ (∂T/∂z)ᵀv = c·v + W₁ᵀ(σ'(a) ⊙ W₂ᵀv) is two matrix products),
    without recording a graph. :meth:`tensors` are the folded weights: the implicit adjoint returns gradients for
    them and autograd carries those back through the folding to the parameters.
    """

    activation: nn.Module
    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor | None
    identity: float = 0.0

    @staticmethod
    def fold(
        activation: nn.Module,
        w1: torch.Tensor,
        b1: torch.Tensor,
        w2: torch.Tensor,
        b2: torch.Tensor | None,
        out_scale: float | torch.Tensor,
        identity: float = 0.0,
    ) -> DenseTerm:
        """c·z + out_scale ⊙ (W₂σ(W₁z + b₁) + b₂), out_scale a number or a per-output vector, as a DenseTerm."""
        if isinstance(out_scale, torch.Tensor):
            w2, b2 = out_scale[:, None] * w2, None if b2 is None else out_scale * b2
        elif out_scale != 1:
            w2, b2 = out_scale * w2, None if b2 is None else out_scale * b2
        return DenseTerm(activation, w1, b1, w2, b2, float(identity))

    def tensors(self) -> dict[str, torch.Tensor]:
        names = ("w1", "b1", "w2") if self.b2 is None else ("w1", "b1", "w2", "b2")
        return {name: getattr(self, name) for name in names}

    def with_tensors(self, tensors: dict[str, torch.Tensor]) -> DenseTerm:
        return dataclasses.replace(self, **tensors)

    def lipschitz_bound(self) -> float:
        """Sound bound on Lip(T) = |c| + Lip(σ)·‖W₂‖₂·‖W₁‖₂ of the folded weights (so hθ, the localisation and the
        scale included), from exact spectral norms in float64 (one batched eigensolver call)."""
        norm1, norm2 = spectral_norms([self.w1, self.w2])
        return abs(self.identity) + ACTIVATION_LIPSCHITZ[type(self.activation)] * norm1 * norm2

    def fixed_point_map(self, base: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """z ↦ base + T(z), for states of shape (batch, width)."""
        bias = base if self.b2 is None else base + self.b2
        activation = ACTIVATIONS_IN_PLACE.get(type(self.activation), self.activation)
        w1, b1, w2t, identity = self.w1, self.b1, self.w2.T, self.identity

        def f(z: torch.Tensor) -> torch.Tensor:
            out = torch.addmm(bias, activation(nn.functional.linear(z, w1, b1)), w2t)
            return out if identity == 0 else out.add_(z, alpha=identity)

        return f

    def linearize(self, y: torch.Tensor) -> DenseLinearization:
        """The derivatives of T at y, of shape (batch, width)."""
        pre = nn.functional.linear(y, self.w1, self.b1)
        post = self.activation(pre)
        slope = ACTIVATION_DERIVATIVES[type(self.activation)](self.activation, pre, post)
        return DenseLinearization(self, y, post, slope)


@dataclasses.dataclass(frozen=True)
class DenseLinearization:
    """Derivatives of a :class:`DenseTerm` T at a point y of shape (batch, width): σ(a) and σ'(a) stored."""

    term: DenseTerm
    y: torch.Tensor
    post: torch.Tensor
    slope: torch.Tensor

    def vjp(self, v: torch.Tensor) -> torch.Tensor:
        """(∂T/∂z)ᵀv = c·v + W₁ᵀ(σ'(a) ⊙ W₂ᵀv), batched; a new tensor (v is not modified)."""
        hidden = torch.mm(v, self.term.w2).mul_(self.slope)
        if self.term.identity == 0:
            return torch.mm(hidden, self.term.w1)
        return torch.addmm(v, hidden, self.term.w1, beta=self.term.identity)

    def param_vjp(self, g: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        """(∂T(y)/∂γ)ᵀg for the folded weights γ named in ``names``."""
        grads: dict[str, torch.Tensor] = {}
        if "w1" in names or "b1" in names:
            hidden = torch.mm(g, self.term.w2).mul_(self.slope)
            if "w1" in names:
                grads["w1"] = torch.mm(hidden.T, self.y)
            if "b1" in names:
                grads["b1"] = hidden.sum(0)
        if "w2" in names:
            grads["w2"] = torch.mm(g.T, self.post)
        if "b2" in names:
            grads["b2"] = g.sum(0)
        return grads
