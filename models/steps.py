"""Residual steps as one-step integrators of ẏ = F(y).

* :class:`ExplicitStep` — y = x + h·F(x), explicit Euler: a ResNet block.
* :class:`ThetaStep` — y = x + h[(1−θ)F(x) + θF(y)], the θ-method of Reshniak & Webster, "Robust learning with
  implicit residual networks", eq. 7: θ=0 explicit Euler, ½ trapezoidal, 1 implicit Euler.

The θ-step finds y with a forward solver (no graph) as the fixed point of y = b + hθF(y), b = x + h(1−θ)F(x), and
returns it through :class:`ImplicitAdjoint`, a custom autograd Function of b and of the weights of the term hθF.
Its backward linearises hθF at y once, solves (I − hθ ∂F/∂y)ᵀ g = ḡ (Reshniak & Webster, eq. 11) with VJPs of that
linearisation, and returns ∂L/∂b = g and ∂L/∂γ = hθ(∂F(y)/∂γ)ᵀ g from it; autograd then gives
∂L/∂x = (I + h(1−θ)∂F/∂x)ᵀ g and the h(1−θ)(∂F(x)/∂γ)ᵀ g part of ∂L/∂γ through b (Reshniak & Webster, eq. 10). Only y
and the weights are saved for the backward, so memory does not grow with solver iterations. For θ = 1, b = x and F(x)
is never evaluated.

The term hθF comes from :func:`implicit_term`: residual functions with a closed form (the dense
:class:`models.residual.ResidualFunction` and the ODE field) fold hθ, the localisation and the scale into their
weights once per step (:class:`models.residual.DenseTerm`), so the solver loops are plain matrix products and the
adjoint's VJPs need no autograd; any other residual function is differentiated by autograd on one recorded graph
of F(y) (:class:`AutogradTerm`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from models.residual import DenseTerm, ResidualFunction
from models.solvers import SolverInfo, solve_adjoint, solve_fixed_point
from models.solvers.auto import AUTO_SOLVER, resolve_solvers


def explicit_euler_step(x: torch.Tensor, fx: torch.Tensor, h: float) -> torch.Tensor:
    """y = x + h·F(x): a ResNet block is explicit Euler (Reshniak & Webster, eq. 2–3)."""
    return x + h * fx


def theta_step_lipschitz(lip_f: float, h: float, theta: float) -> float:
    """Lipschitz constant of x ↦ y for the θ-step when θhℓ < 1: (1 + (1−θ)hℓ)/(1 − θhℓ), ℓ = Lip(F).

    From ‖y−y'‖ ≤ ‖x−x'‖ + h(1−θ)ℓ‖x−x'‖ + hθℓ‖y−y'‖ (DESIGN.md "Certificates", Reshniak & Webster's stability
    analysis).
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


class AutogradTerm:
    """The term T(z) = coeff·F(z) of a θ-step for any residual function, differentiated by autograd.

    The fallback for residual functions without ``implicit_term`` (convolutions) or without a closed-form σ'. It
    has the interface of :class:`models.residual.DenseTerm`: :meth:`tensors` (here F's weights themselves),
    :meth:`with_tensors`, :meth:`fixed_point_map` and :meth:`linearize`, whose VJPs run on one graph of F(y).
    """

    def __init__(self, residual: nn.Module, params: dict[str, torch.Tensor], coeff: float):
        self.residual, self.params, self.coeff = residual, params, coeff

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.params)

    def with_tensors(self, tensors: dict[str, torch.Tensor]) -> AutogradTerm:
        return AutogradTerm(self.residual, tensors, self.coeff)

    def fixed_point_map(self, base: torch.Tensor):
        """z ↦ base + coeff·F(z)."""
        return lambda z: base + self.coeff * self.residual.apply(self.params, z)

    def linearize(self, y: torch.Tensor) -> AutogradLinearization:
        return AutogradLinearization(self, y)


class AutogradLinearization:
    """VJPs of coeff·F at y on one recorded graph of F(y), with the weights as leaves (built once, reused)."""

    def __init__(self, term: AutogradTerm, y: torch.Tensor):
        self.coeff = term.coeff
        with torch.enable_grad():
            self.z = y.detach().requires_grad_(True)
            self.leaves = {k: v.detach().requires_grad_(True) for k, v in term.params.items()}
            self.fz = term.residual.apply(self.leaves, self.z)  # F(y); coeff is applied to the vectors

    def vjp(self, v: torch.Tensor) -> torch.Tensor:
        jtv = torch.autograd.grad(self.fz, self.z, v, retain_graph=True)[0]
        return jtv if self.coeff == 1 else self.coeff * jtv  # not in place: the engine may hand back v itself

    def param_vjp(self, g: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        weight = g if self.coeff == 1 else self.coeff * g
        found = torch.autograd.grad(self.fz, [self.leaves[n] for n in names], weight, allow_unused=True)
        return {n: gi for n, gi in zip(names, found, strict=True) if gi is not None}


def implicit_term(residual: nn.Module, params: dict[str, torch.Tensor], coeff: float, x: torch.Tensor):
    """coeff·F for the solvers of states like ``x``: the residual's closed form (``implicit_term``) where it has one
    and the states are (batch, width) matrices, else :class:`AutogradTerm`."""
    closed = getattr(residual, "implicit_term", None)
    term = closed(params, coeff) if closed is not None and x.dim() == 2 else None
    return term if term is not None else AutogradTerm(residual, params, coeff)


class ImplicitAdjoint(torch.autograd.Function):
    """y = z* (the solved fixed point of y = b + T(y; γ), T = hθF) as a differentiable function of b and of the
    term's tensors γ (F's weights, or weights folded with hθ: see :func:`implicit_term`).

    backward: g solves (I − ∂T(y)/∂y)ᵀ g = ḡ; returns g for b and (∂T(y)/∂γ)ᵀ g for γ, all from one linearisation
    of T at y made in the backward (nothing of the forward solve is kept).
    """

    @staticmethod
    def forward(ctx, step, term, backward, z_star, base, *tensors):  # noqa: D401 - autograd signature
        ctx.step, ctx.term, ctx.backward = step, term, backward  # backward: the adjoint solver's name
        ctx.save_for_backward(z_star, *tensors)
        return z_star.clone()  # not a view: an in-place op on y must not corrupt the saved fixed point

    @staticmethod
    def backward(ctx, grad_y):
        step = ctx.step
        z_star, *tensors = ctx.saved_tensors
        names = list(ctx.term.tensors())
        with torch.no_grad():
            term = ctx.term.with_tensors({n: t.detach() for n, t in zip(names, tensors, strict=True)})
            linear = term.linearize(z_star)
            cfg = step.solver
            grad, info = solve_adjoint(linear.vjp, grad_y, ctx.backward, cfg.backward_tol, cfg.backward_max_iter)
        step.stats.record_backward(info)
        if not info.converged:  # a non-converged adjoint gives inexact gradients: say so, never silently
            warnings.warn(step.stats.failures[-1], RuntimeWarning, stacklevel=2)
        wanted = [n for n, w in zip(names, ctx.needs_input_grad[5:], strict=True) if w]
        found = linear.param_vjp(grad, wanted) if wanted else {}
        param_grads = [found.get(n) for n in names]
        return (None, None, None, None, grad if ctx.needs_input_grad[4] else None, *param_grads)


@dataclass
class SolverConfig:
    """Solver names (``"auto"``: :func:`models.solvers.auto.resolve_solvers`), tolerances and iteration limits."""

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
    pairs: dict[str, int] = field(default_factory=dict)  # "forward + backward" → forward solves with that pair

    def record_pair(self, forward: str, backward: str) -> None:
        name = f"{forward} + {backward}"
        self.pairs[name] = self.pairs.get(name, 0) + 1

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
        for name, count in other.pairs.items():
            self.pairs[name] = self.pairs.get(name, 0) + count

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
        self._contraction: tuple | None = None  # (state key, tensors, bound) of contraction_bound

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = self.residual.weights()  # once per step, with graph (see ResidualFunction.weights)
        if self.theta == 0:  # explicit Euler: no solver at all
            return explicit_euler_step(x, self.residual.apply(params, x), self.h)
        hth = self.h * self.theta
        term = implicit_term(self.residual, params, hth, x)  # hθF, weights folded once per step (with graph)
        if self.theta == 1:  # implicit Euler: y = x + hF(y); F(x) is not needed
            base = x
            with torch.no_grad():
                z0 = x.detach()  # the solver's first step is the explicit predictor x + hF(x)
        else:
            fx = self.residual.apply(params, x)
            base = x + self.h * (1 - self.theta) * fx
            with torch.no_grad():
                z0 = base.detach() + hth * fx.detach()  # one explicit predictor step
        cfg = self.solver
        forward, backward = cfg.forward, cfg.backward
        if AUTO_SOLVER in (forward, backward):
            forward, backward = resolve_solvers(forward, backward, self.contraction_bound(term, params))
        self.stats.record_pair(forward, backward)
        with torch.no_grad():
            frozen = term.with_tensors({k: v.detach() for k, v in term.tensors().items()})
            fixed_point_map = frozen.fixed_point_map(base.detach())
            z_star, info = solve_fixed_point(fixed_point_map, z0, forward, cfg.tol, cfg.max_iter)
        self.stats.record_forward(info, self.solver.tol)
        if not info.converged:
            warnings.warn(self.stats.failures[-1], RuntimeWarning, stacklevel=2)
        if not torch.is_grad_enabled():
            return z_star
        return ImplicitAdjoint.apply(self, frozen, backward, z_star, base, *term.tensors().values())

    def contraction_bound(self, term, params: dict[str, torch.Tensor]) -> float | None:
        """A sound upper bound on Lip(hθF) for the weights of this forward pass, or None where there is none: the
        folded closed form's exact norms (:meth:`models.residual.DenseTerm.lipschitz_bound`), else hθ times the
        residual function's own bound (not for parametrised weights, which the bound would recompute). Kept while
        the residual's parameters and buffers (their identity and in-place versions), h, θ and the mode are
        unchanged: once per weight update in training, once in all in evaluation."""
        tensors = (*self.residual.parameters(), *self.residual.buffers())
        key = (self.training, self.h, self.theta, tuple((id(t), t._version) for t in tensors))
        cached = self._contraction
        if cached is not None and cached[0] == key:
            return cached[2]
        hth = self.h * self.theta
        with torch.no_grad():
            closed = getattr(self.residual, "implicit_term", None)
            dense = term if isinstance(term, DenseTerm) else (closed(params, hth) if closed is not None else None)
            if dense is not None:
                bound = dense.lipschitz_bound()
            elif any(parametrize.is_parametrized(m) for m in self.residual.modules()):
                bound = None
            else:
                try:
                    bound = hth * float(self.residual.lipschitz_bound())
                except LipschitzBoundUnavailable:
                    bound = None
        self._contraction = (key, tensors, bound)  # the tensors kept alive: their ids cannot be reused
        return bound

    def lipschitz_bound(self) -> float:
        return theta_step_lipschitz(self.residual.lipschitz_bound(), self.h, self.theta)
