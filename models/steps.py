"""Residual steps as one-step integrators of ẏ = F(y).

* :class:`ExplicitStep` — y = x + h·F(x), explicit Euler: a ResNet block.
* :class:`ThetaStep` — y = x + h[(1−θ)F(x) + θF(y)], the θ-method of Reshniak & Webster, "Robust learning with
  implicit residual networks" (seed 002, eq. 7): θ=0 explicit Euler, ½ trapezoidal, 1 implicit Euler.

The θ-step finds y with a forward solver (no graph) as the fixed point of y = b + hθF(y), b = x + h(1−θ)F(x), and
returns it through :class:`ImplicitAdjoint`, a custom autograd Function of b and of F's weights. Its backward builds
the graph of F(y) once, solves (I − hθ ∂F/∂y)ᵀ g = ḡ (seed 002, eq. 11) with VJPs on that graph, and returns
∂L/∂b = g and ∂L/∂γ = hθ(∂F(y)/∂γ)ᵀ g from the same graph; autograd then gives ∂L/∂x = (I + h(1−θ)∂F/∂x)ᵀ g and
the h(1−θ)(∂F(x)/∂γ)ᵀ g part of ∂L/∂γ through b (seed 002, eq. 10). Only y and the weights are saved for the
backward, so memory does not grow with solver iterations. For θ = 1, b = x and F(x) is never evaluated.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from models.residual import ResidualFunction
from models.solvers import SolverInfo, solve_adjoint, solve_fixed_point


def explicit_euler_step(x: torch.Tensor, fx: torch.Tensor, h: float) -> torch.Tensor:
    """y = x + h·F(x): a ResNet block is explicit Euler (seed 002, eq. 2–3)."""
    return x + h * fx


def theta_method_map(x: torch.Tensor, fx: torch.Tensor, fz: torch.Tensor, h: float, theta: float) -> torch.Tensor:
    """Φ(x, z) = x + h[(1−θ)F(x) + θF(z)]; its fixed point y = Φ(x, y) is the θ-step (seed 002, eq. 7)."""
    return x + h * ((1 - theta) * fx + theta * fz)


def theta_step_lipschitz(lip_f: float, h: float, theta: float) -> float:
    """Lipschitz constant of x ↦ y for the θ-step when θhℓ < 1: (1 + (1−θ)hℓ)/(1 − θhℓ), ℓ = Lip(F).

    From ‖y−y'‖ ≤ ‖x−x'‖ + h(1−θ)ℓ‖x−x'‖ + hθℓ‖y−y'‖ (DESIGN.md "Certificates", seed 002 stability analysis).
    """
    if theta * h * lip_f >= 1:
        raise LipschitzBoundUnavailable(
            f"θ·h·Lip(F) = {theta}·{h}·{lip_f:.4g} ≥ 1: the implicit step has no Lipschitz bound of this form "
            "(and its fixed point need not be unique); use spectral normalisation or a smaller h"
        )
    return (1 + (1 - theta) * h * lip_f) / (1 - theta * h * lip_f)


class LipschitzBoundUnavailable(ValueError):
    """A sound Lipschitz bound cannot be given for this model."""


class ExplicitStep(nn.Module):
    def __init__(self, residual: ResidualFunction, h: float):
        super().__init__()
        self.residual = residual
        self.h = h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return explicit_euler_step(x, self.residual(x), self.h)

    def lipschitz_bound(self) -> float:
        return 1 + self.h * self.residual.lipschitz_bound()


class ImplicitAdjoint(torch.autograd.Function):
    """y = z* (the solved fixed point of y = b + hθF(y; γ)) as a differentiable function of b and the weights γ.

    backward: g solves (I − hθ ∂F(y)/∂y)ᵀ g = ḡ; returns g for b and hθ(∂F(y)/∂γ)ᵀ g for γ, all from one graph
    of F at y built in the backward (nothing of the forward solve is kept).
    """

    @staticmethod
    def forward(ctx, step, names, z_star, base, *params):  # noqa: D401 - autograd signature
        ctx.step, ctx.names = step, names
        ctx.save_for_backward(z_star, *params)
        return z_star.clone()  # not a view: an in-place op on y must not corrupt the saved fixed point

    @staticmethod
    def backward(ctx, grad_y):
        step = ctx.step
        z_star, *params = ctx.saved_tensors
        wanted = ctx.needs_input_grad[4:]
        with torch.enable_grad():
            z = z_star.detach().requires_grad_(True)
            leaves = [p.detach().requires_grad_(w) for p, w in zip(params, wanted, strict=True)]
            fz = step.residual.apply(dict(zip(ctx.names, leaves, strict=True)), z)  # F(y); hθ is applied to g
        hth = step.h * step.theta

        def vjp(v: torch.Tensor) -> torch.Tensor:
            jtv = torch.autograd.grad(fz, z, v, retain_graph=True)[0]
            return jtv if hth == 1 else hth * jtv  # not in place: the engine may hand back v itself

        cfg = step.solver
        grad, info = solve_adjoint(vjp, grad_y, cfg.backward, cfg.backward_tol, cfg.backward_max_iter)
        step.stats.record_backward(info)
        if not info.converged:  # a non-converged adjoint gives inexact gradients: say so, never silently
            warnings.warn(step.stats.failures[-1], RuntimeWarning, stacklevel=2)
        param_grads: list[torch.Tensor | None] = [None] * len(params)
        need = [i for i, w in enumerate(wanted) if w]
        if need:
            weight = grad if hth == 1 else hth * grad
            found = torch.autograd.grad(fz, [leaves[i] for i in need], weight, allow_unused=True)
            for i, gi in zip(need, found, strict=True):
                param_grads[i] = gi
        return (None, None, None, grad if ctx.needs_input_grad[3] else None, *param_grads)


@dataclass
class SolverConfig:
    forward: str = "anderson"
    backward: str = "gmres"
    tol: float = 1e-5
    max_iter: int = 50
    backward_tol: float = 1e-5
    backward_max_iter: int = 50


@dataclass
class SolverStats:
    """Worst forward/backward solves since the last :meth:`reset` (training diagnostics)."""

    forward_iterations: int = 0
    forward_residual: float = 0.0
    backward_iterations: int = 0
    backward_residual: float = 0.0
    failures: list[str] = field(default_factory=list)

    def record_forward(self, info: SolverInfo, tol: float) -> None:
        self.forward_iterations = max(self.forward_iterations, info.iterations)
        self.forward_residual = max(self.forward_residual, info.residual)
        if not info.converged:
            self.failures.append(f"forward solve stopped at residual {info.residual:.2e} > tol {tol:g}")

    def record_backward(self, info: SolverInfo) -> None:
        self.backward_iterations = max(self.backward_iterations, info.iterations)
        self.backward_residual = max(self.backward_residual, info.residual)
        if not info.converged:
            self.failures.append(f"backward solve stopped at residual {info.residual:.2e}")

    def merge(self, other: SolverStats) -> None:
        """Fold ``other`` in: worst iterations and residuals, all failures (for totals over several resets)."""
        self.forward_iterations = max(self.forward_iterations, other.forward_iterations)
        self.forward_residual = max(self.forward_residual, other.forward_residual)
        self.backward_iterations = max(self.backward_iterations, other.backward_iterations)
        self.backward_residual = max(self.backward_residual, other.backward_residual)
        self.failures.extend(other.failures)

    def reset(self) -> None:
        self.__init__()


class ThetaStep(nn.Module):
    def __init__(self, residual: ResidualFunction, h: float, theta: float, solver: SolverConfig | None = None):
        super().__init__()
        self.residual = residual
        self.h = h
        self.theta = theta
        self.solver = solver or SolverConfig()
        self.stats = SolverStats()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = self.residual.weights()  # once per step, with graph (see ResidualFunction.weights)
        if self.theta == 0:  # explicit Euler: no solver at all
            return explicit_euler_step(x, self.residual.apply(params, x), self.h)
        hth = self.h * self.theta
        frozen = {k: v.detach() for k, v in params.items()}
        if self.theta == 1:  # implicit Euler: y = x + hF(y); F(x) is not needed
            base = x
            with torch.no_grad():
                z0 = x.detach()  # the solver's first step is the explicit predictor x + hF(x)
        else:
            fx = self.residual.apply(params, x)
            base = x + self.h * (1 - self.theta) * fx
            with torch.no_grad():
                z0 = base.detach() + hth * fx.detach()  # one explicit predictor step
        with torch.no_grad():
            frozen_base = base.detach()

            def fixed_point_map(z: torch.Tensor) -> torch.Tensor:
                return frozen_base + hth * self.residual.apply(frozen, z)

            cfg = self.solver
            z_star, info = solve_fixed_point(fixed_point_map, z0, cfg.forward, cfg.tol, cfg.max_iter)
        self.stats.record_forward(info, self.solver.tol)
        if not info.converged:
            warnings.warn(self.stats.failures[-1], RuntimeWarning, stacklevel=2)
        if not torch.is_grad_enabled():
            return z_star
        names = tuple(params)
        return ImplicitAdjoint.apply(self, names, z_star, base, *params.values())

    def lipschitz_bound(self) -> float:
        return theta_step_lipschitz(self.residual.lipschitz_bound(), self.h, self.theta)
