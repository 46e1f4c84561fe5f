"""Training regularizers of residual networks, by name (``train.regularizers`` in the job spec).

Each is a function of the network and of its states along one forward pass, ``states = [y_0, y_1, …, y_T]``
(``y_0`` the embedded input, ``y_t`` the output of step t, as ``ResidualNetwork(x, return_states=True)`` returns
them), and returns a 0-d tensor with its autograd graph, so that the training loop adds ``weight × value`` to the
loss. Batch terms are averaged over the batch. The stochastic regularizer R_rnd (Reshniak & Webster, eq. 10) needs a
second, perturbed forward pass and lives in ``evaluation.training``.

=================== ========================================================================= ==================
name                value                                                                     source
=================== ========================================================================= ==================
``fixed_point``     R_fp = Σ_t Σ_{k=1}^K (k/K)^p ‖r(y_t^k)‖, Picard iterates of each θ-step    [RW], eq. 9
``divergence``      1/(dT) Σ_t (t/T)^p ∇·F_t(y_t), Hutchinson's estimator                     [RW-poster]
``total_variation`` 1/T Σ_t ‖γ_t − γ_{t−1}‖², weights of consecutive steps                    [RW-poster]
``field_norm``      R_F = Σ_t ‖F_t(y_{t−1})‖²                                                  [R], eq. 7
``stability_trace`` R_λ = Σ_t Tr(R_tᵀR_t), R_t the step's Jacobian R_θ(hDF), Hutchinson       [R], eq. 8
``normal``          R_n = Σ_t ‖(step from y + αn̂) − y‖², n̂ ∥ ∇‖F(y + ε)‖²                     [R], eq. 9
=================== ========================================================================= ==================

[R] = Reshniak, "Dissipative residual layers for unsupervised implicit parameterization of data manifolds";
[RW-poster] = Reshniak & Webster, poster "Robust learning with implicit residual networks" ("Trajectory
regularization"); [RW] = Reshniak & Webster, the paper "Robust learning with implicit residual networks".
R_adj (Reshniak, eq. 10) is not provided: it needs an adjoint (backward-in-time) trajectory, i.e. one more nonlinear
solve x_j = y − F(x_j) per adjoint step and layer, and it targets the manifold-denoising setting of Reshniak's paper.

Example::

    logits, states = net(x, return_states=True)
    loss = ce(logits, y) + 1e-3 * fixed_point_penalty(net, states, power=1.0, iterations=10)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn


# ------------------------------------------------------------------------------------------------ helpers
def _steps(model: nn.Module) -> list[nn.Module]:
    steps = getattr(model, "steps", None)
    if steps is None:
        raise ValueError(f"{type(model).__name__} has no residual steps to regularize")
    return list(steps)


def _field_steps(model: nn.Module, states: list[torch.Tensor]) -> list[tuple[int, nn.Module]]:
    """(t, step) for steps t = 1…T that have a residual function F (explicit, implicit and ode families)."""
    steps = _steps(model)
    if len(states) != len(steps) + 1:
        raise ValueError(f"expected {len(steps) + 1} states (input and one per step), got {len(states)}")
    found = [(t, step) for t, step in enumerate(steps, start=1) if hasattr(step, "residual")]
    if not found:
        raise ValueError(f"{type(model).__name__} has no residual functions F to regularize (families explicit, "
                         "implicit and ode only)")
    return found


def _theta(step: nn.Module) -> float:
    return float(getattr(step, "theta", 0.0))  # an ExplicitStep is the θ-method with θ = 0


def _differentiable(y: torch.Tensor) -> torch.Tensor:
    """``y`` itself when it is part of the graph (gradients then reach earlier layers), else a fresh leaf."""
    return y if y.requires_grad else y.detach().requires_grad_(True)


def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like ``like``, drawn on the CPU generator (seeded, device independent)."""
    return torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device)


def _vjp(out: torch.Tensor, inp: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(∂out/∂inp)ᵀ v, itself differentiable (create_graph)."""
    return torch.autograd.grad(out, inp, v, create_graph=True)[0]


# ------------------------------------------------------------------------------------------------ regularizers
def fixed_point_penalty(
    model: nn.Module, states: list[torch.Tensor], power: float = 1.0, iterations: int = 10
) -> torch.Tensor:
    """R_fp = Σ_t Σ_{k=1}^{K} (k/K)^p ‖r(y_t^k)‖ — Reshniak & Webster, "Robust learning with implicit residual
    networks", eq. 9.

    For every θ-step t with θ > 0, from its input x = y_{t−1} (detached: "each r(y_t^k) is a function of γ_t"), the
    Picard iterates y^0 = x, y^{k+1} = Φ(y^k) of Φ(z) = x + h[(1−θ)F(x) + θF(z)] are recorded with their graph and
    the residuals r(y^k) = y^k − Φ(y^k) weighted by α_k = (k/K)^p (‖·‖ per sample, mean over the batch). Smaller p
    asks for faster convergence; minimising it reduces the iterations the forward solver needs. An explicit step
    (θ = 0) has r(y^1) = 0 and contributes nothing.

    Args:
        model: a residual network with θ-steps (families implicit, ode).
        states: the states of one forward pass.
        power: p.
        iterations: K, the recorded fixed-point iterations per step.
    """
    total = states[0].new_zeros(())
    for t, step in _field_steps(model, states):
        theta, h = _theta(step), step.h
        if theta == 0:
            continue
        params = step.residual.weights()
        x = states[t - 1].detach()
        base = x + h * (1 - theta) * step.residual.apply(params, x) if theta < 1 else x

        def phi(z: torch.Tensor, base=base, params=params, step=step, hth=h * theta) -> torch.Tensor:
            return base + hth * step.residual.apply(params, z)

        y, y_next = x, phi(x)
        for k in range(1, iterations + 1):
            y, y_next = y_next, phi(y_next)  # y = y^k, y_next = Φ(y^k)
            residual = torch.linalg.vector_norm(y - y_next, dim=1).mean()
            total = total + (k / iterations) ** power * residual
    return total


def divergence_penalty(
    model: nn.Module,
    states: list[torch.Tensor],
    power: float = 1.0,
    samples: int = 1,
    generator: torch.Generator | None = None,
    noise: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """1/(dT) Σ_{t=1}^{T} (t/T)^p ∇·F(γ_t, y_t) — Reshniak & Webster, poster "Robust learning with implicit residual
    networks", "Trajectory regularization", the divergence by Hutchinson's estimator
    ∇·F = E_z[zᵀ (∂F/∂y) z], z ~ N(0, I).

    Step t's field F(γ_t, ·) is evaluated at its output state y_t (d = its dimension, T = the number of steps); the
    t = 0 term of the seed has weight 0. Negative divergence is rewarded: the flow is pushed to contract volumes.

    Args:
        power: p of the weights (t/T)^p.
        samples: Hutchinson probes per point.
        generator: CPU generator for the probes.
        noise: the probes themselves, one (samples, *state shape) tensor per step (tests); overrides ``generator``.
    """
    pairs = _field_steps(model, states)
    T = len(_steps(model))
    total = states[0].new_zeros(())
    for i, (t, step) in enumerate(pairs):
        y = _differentiable(states[t])
        fy = step.residual(y)
        estimate = y.new_zeros(y.shape[0])
        for s in range(samples):
            z = noise[i][s] if noise is not None else _randn(y, generator)
            estimate = estimate + (_vjp(fy, y, z) * z).sum(dim=1)
        total = total + (t / T) ** power * estimate.mean() / samples / y[0].numel()
    return total / T


def total_variation_penalty(model: nn.Module, states: list[torch.Tensor] | None = None) -> torch.Tensor:
    """1/T Σ_{t=2}^{T} ‖γ_t − γ_{t−1}‖² — Reshniak & Webster, poster "Robust learning with implicit residual networks",
    "Trajectory regularization": total variation in time of the weights of consecutive steps (all their parameters,
    raw), favouring a network that discretises one smooth ODE. Steps with shared weights contribute exactly 0. Any
    family whose steps have parameters of one shape works; ``states`` is unused."""
    steps = _steps(model)
    params = [list(step.parameters()) for step in steps]
    total = next(iter(model.parameters())).new_zeros(())
    for prev, cur in zip(params, params[1:], strict=False):
        if len(prev) != len(cur):
            raise ValueError("total variation needs steps with the same parameters")
        for a, b in zip(prev, cur, strict=True):
            if a is not b:
                total = total + (b - a).square().sum()
    return total / len(steps)


def field_norm_penalty(model: nn.Module, states: list[torch.Tensor]) -> torch.Tensor:
    """R_F = ‖F(γ, x)‖² — Reshniak, "Dissipative residual layers for unsupervised implicit parameterization of data
    manifolds", eq. 7: the vector field should vanish on the data (the data points are stationary).
    Summed over the steps, each field at its input state y_{t−1}; ‖·‖² per sample, mean over the batch."""
    total = states[0].new_zeros(())
    for t, step in _field_steps(model, states):
        total = total + step.residual(states[t - 1]).square().sum(dim=1).mean()
    return total


def stability_trace_penalty(
    model: nn.Module,
    states: list[torch.Tensor],
    samples: int = 1,
    iterations: int = 50,
    tol: float = 1e-6,
    generator: torch.Generator | None = None,
    noise: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """R_λ = Tr(R_θ(D_xF)ᵀ R_θ(D_xF)) = ‖R_θ(D_xF)‖_F² — Reshniak, "Dissipative residual layers for unsupervised
    implicit parameterization of data manifolds", eq. 8: a bound on Σ_i |λ_i(R_θ(DF))|², whose
    minimisation pulls the eigenvalues of the step's Jacobian towards 0 (a dissipative, stable layer), estimated
    with Hutchinson's estimator as the seed suggests.

    For our θ-step y = x + h[(1−θ)F(x) + θF(y)] the Jacobian is R = (I − hθJ(y))⁻¹(I + h(1−θ)J(x)), J = ∂F/∂y,
    i.e. R_θ(hJ) of the seed's stability function evaluated at the step's two points. With v ~ N(0, I),
    E‖Rᵀv‖² = Tr(RRᵀ) = Tr(RᵀR), and Rᵀv needs only vector–Jacobian products: w solves (I − hθJ(y))ᵀw = v by the
    differentiable fixed-point (Neumann) iteration w ← v + hθJ(y)ᵀw (converges when hθ‖J(y)‖ < 1, as the forward
    solver's fixed-point iteration does; a warning says when ``iterations`` did not reach ``tol``), then
    Rᵀv = w + h(1−θ)J(x)ᵀw. Summed over the steps; mean over the batch and the probes.

    Args:
        samples: Hutchinson probes per point.
        iterations: most Neumann iterations per probe (θ > 0 only).
        tol: stop when an update is below ``tol``·‖v‖.
        generator: CPU generator for the probes.
        noise: the probes, one (samples, *state shape) tensor per step (tests); overrides ``generator``.
    """
    total = states[0].new_zeros(())
    for i, (t, step) in enumerate(_field_steps(model, states)):
        theta, h = _theta(step), step.h
        params = step.residual.weights()
        x = _differentiable(states[t - 1])
        fx = step.residual.apply(params, x) if theta < 1 else None
        y = _differentiable(states[t]) if theta > 0 else None
        fy = step.residual.apply(params, y) if y is not None else None
        estimate = x.new_zeros(())
        for s in range(samples):
            v = noise[i][s] if noise is not None else _randn(x, generator)
            w = v
            if fy is not None:
                v_norm = float(torch.linalg.vector_norm(v))
                for _ in range(iterations):
                    w_next = v + h * theta * _vjp(fy, y, w)
                    change = float(torch.linalg.vector_norm((w_next - w).detach()))
                    w = w_next
                    if change <= tol * v_norm:
                        break
                else:
                    warnings.warn(
                        f"stability_trace: Neumann iteration for (I − hθJ)ᵀw = v stopped at relative change "
                        f"{change / max(v_norm, 1e-30):.2e} > {tol:g} after {iterations} iterations (hθ‖J‖ ≥ 1?)",
                        RuntimeWarning,
                        stacklevel=2,
                    )
            rtv = w + h * (1 - theta) * _vjp(fx, x, w) if fx is not None else w
            estimate = estimate + rtv.square().sum(dim=1).mean()
        total = total + estimate / samples
    return total


def normal_penalty(
    model: nn.Module,
    states: list[torch.Tensor],
    alpha: float = 0.1,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
    perturbation: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """R_n = ‖F(γ, x + αn) + αn‖² — Reshniak, "Dissipative residual layers for unsupervised implicit
    parameterization of data manifolds", eq. 9: a point pushed off the data manifold along its normal
    n = ∇‖F(γ, x + ε)‖² (ε small random noise, for a unique gradient) must be carried back to x by one step.

    For step t at its input x = y_{t−1} (detached), with n̂ = n/‖n‖ per sample (normalised so that α is the
    distance of the perturbed point; the seed leaves n unscaled, but on the manifold ∇‖F‖² ≈ 0 would make the
    perturbation vanish), the θ-step started at x + αn̂ and ending at x must satisfy
    x = x + αn̂ + h[(1−θ)F(x + αn̂) + θF(x)], so the penalty is ‖αn̂ + h(1−θ)F(x + αn̂) + hθF(x)‖², which is
    the seed's ‖F(x + αn) + αn‖² for an explicit step (θ = 0, the step h included in F). Summed over the
    steps; mean over the batch. The direction n̂ is a constant (no gradient flows through it).

    Args:
        alpha: α, the distance of the perturbed point.
        noise: standard deviation of ε.
        generator: CPU generator for ε.
        perturbation: the ε themselves, one per step (tests); overrides ``generator``.
    """
    total = states[0].new_zeros(())
    for i, (t, step) in enumerate(_field_steps(model, states)):
        theta, h = _theta(step), step.h
        params = step.residual.weights()
        x = states[t - 1].detach()
        eps = perturbation[i] if perturbation is not None else noise * _randn(x, generator)
        with torch.enable_grad():
            probe = (x + eps).requires_grad_(True)
            frozen = {k: v.detach() for k, v in params.items()}
            level = step.residual.apply(frozen, probe).square().sum()
            n = torch.autograd.grad(level, probe)[0]
        n_hat = n / torch.linalg.vector_norm(n, dim=1, keepdim=True).clamp_min(1e-12)
        moved = x + alpha * n_hat
        back = alpha * n_hat + h * (1 - theta) * step.residual.apply(params, moved)
        if theta > 0:
            back = back + h * theta * step.residual.apply(params, x)
        total = total + back.square().sum(dim=1).mean()
    return total


# ------------------------------------------------------------------------------------------------ registry
Regularizer = Callable[..., torch.Tensor]
REGULARIZERS: dict[str, Regularizer] = {
    "fixed_point": fixed_point_penalty,
    "divergence": divergence_penalty,
    "total_variation": total_variation_penalty,
    "field_norm": field_norm_penalty,
    "stability_trace": stability_trace_penalty,
    "normal": normal_penalty,
}
# the ones that draw random numbers take the training generator
_RANDOM = frozenset({"divergence", "stability_trace", "normal"})


def regularization_terms(
    model: nn.Module, states: list[torch.Tensor], options: dict[str, dict], generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """The value of each named regularizer (unweighted).

    Args:
        model: the network.
        states: its states on the batch (``model(x, return_states=True)``).
        options: name → keyword options of that regularizer (without ``weight``), e.g.
            ``{"fixed_point": {"power": 1.0, "iterations": 10}}``.
        generator: CPU generator for the randomised ones.
    Returns:
        name → 0-d tensor with graph.
    Raises:
        KeyError: an unknown name. ValueError: the model cannot be regularized so.
    """
    out = {}
    for name, kwargs in options.items():
        try:
            fn = REGULARIZERS[name]
        except KeyError:
            raise KeyError(f"unknown regularizer {name!r}; choose one of {sorted(REGULARIZERS)}") from None
        extra = {"generator": generator} if name in _RANDOM else {}
        out[name] = fn(model, states, **kwargs, **extra)
    return out


__all__ = [
    "REGULARIZERS",
    "divergence_penalty",
    "field_norm_penalty",
    "fixed_point_penalty",
    "normal_penalty",
    "regularization_terms",
    "stability_trace_penalty",
    "total_variation_penalty",
]
