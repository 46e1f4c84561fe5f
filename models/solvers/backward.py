"""Backward solvers: the adjoint of implicit differentiation (Reshniak & Webster, eq. 11).

With J = ∂f/∂z at the fixed point and upstream gradient ḡ = ∂L/∂y, solve (I − J)ᵀ g = ḡ using only
vector–Jacobian products v ↦ Jᵀv. Fixed-point iteration and the Neumann series (Reshniak & Webster, eq. 12) converge
when ‖J‖ < 1; restarted GMRES (Saad & Schultz, 1986) converges for any non-singular I − J.

``SolverInfo.iterations`` counts VJPs; ``max_iter`` bounds them. Example::

    A = 0.5 * torch.eye(3)
    g, info = BACKWARD_SOLVERS["gmres"](lambda v: v @ A, torch.ones(2, 3), tol=1e-8, max_iter=10)  # g = 2
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from models.solvers.base import SolverInfo, check_interval

VJP = Callable[[torch.Tensor], torch.Tensor]
BackwardSolver = Callable[..., tuple[torch.Tensor, SolverInfo]]
BACKWARD_SOLVERS: dict[str, BackwardSolver] = {}


def register_backward_solver(name: str):
    def register(fn: BackwardSolver) -> BackwardSolver:
        BACKWARD_SOLVERS[name] = fn
        return fn

    return register


@register_backward_solver("fixed_point")
def adjoint_fixed_point(
    vjp: VJP, rhs: torch.Tensor, tol: float, max_iter: int, check_every: int | None = None
) -> tuple[torch.Tensor, SolverInfo]:
    """g_{k+1} = ḡ + Jᵀ g_k, from g_0 = ḡ; stops when ‖g_{k+1} − g_k‖ (the residual of g_k) < tol·‖ḡ‖."""
    every = check_interval(rhs, check_every)
    g, b_norm = rhs, float(torch.linalg.vector_norm(rhs))
    if b_norm == 0:
        return torch.zeros_like(rhs), SolverInfo(0, 0.0, True)
    residual = float("inf")
    for k in range(1, max_iter + 1):
        g_next = rhs + vjp(g)
        if k % every == 0 or k == max_iter:
            residual = float(torch.dist(g_next, g)) / b_norm
            if residual < tol:
                return g_next, SolverInfo(k, residual, True)
        g = g_next
    return g, SolverInfo(max_iter, residual, False)


@register_backward_solver("neumann")
def adjoint_neumann(
    vjp: VJP, rhs: torch.Tensor, tol: float, max_iter: int, check_every: int | None = None
) -> tuple[torch.Tensor, SolverInfo]:
    """Truncated Neumann series g = Σ_i (Jᵀ)^i ḡ, stopped when a term is below ``tol``·‖ḡ‖."""
    every = check_interval(rhs, check_every)
    g, term, b_norm = rhs.clone(), rhs, float(torch.linalg.vector_norm(rhs))
    if b_norm == 0:
        return torch.zeros_like(rhs), SolverInfo(0, 0.0, True)
    residual = float("inf")
    for k in range(1, max_iter + 1):
        term = vjp(term)
        g.add_(term)
        if k % every == 0 or k == max_iter:
            residual = float(torch.linalg.vector_norm(term)) / b_norm
            if residual < tol:
                return g, SolverInfo(k, residual, True)
    return g, SolverInfo(max_iter, residual, False)


@register_backward_solver("gmres")
def adjoint_gmres(
    vjp: VJP, rhs: torch.Tensor, tol: float, max_iter: int, restart: int = 20
) -> tuple[torch.Tensor, SolverInfo]:
    """Restarted GMRES on A g = ḡ with A = I − Jᵀ; the batch is one block-diagonal system.

    ``max_iter`` counts products with Jᵀ (one VJP each). Krylov spaces of A and of Jᵀ coincide, so the Arnoldi
    process runs on Jᵀ (V_{j+1} H = Jᵀ V_j) and the least-squares problem uses I − H. Per step, on the device: one
    VJP written into the preallocated basis, one matrix–vector product that gives both the Gram–Schmidt
    coefficients and ‖w‖², and one update; on the host: one read of j + 2 numbers, after which ‖w⊥‖ follows by
    Pythagoras and the Hessenberg column is reduced by Givens rotations that also give the residual norm (no
    per-step ``lstsq``). Classical Gram–Schmidt is repeated once ("twice is enough", Kahan–Parlett) whenever it
    removed more than half of ‖w‖². The start is g = 0 (the first basis vector is ḡ itself); the true residual is
    recomputed only at a restart.
    """
    b = rhs.reshape(-1)
    b_norm = float(torch.linalg.vector_norm(b))
    if b_norm == 0:
        return torch.zeros_like(rhs), SolverInfo(0, 0.0, True)

    x = torch.zeros_like(b)
    r, beta = b, b_norm
    used, residual = 0, 1.0
    basis = rhs.new_empty(min(restart, max_iter) + 1, *rhs.shape)  # V, one row per Krylov vector
    flat = basis.view(basis.shape[0], -1)
    # the views the loop needs, each made once: indexing a tensor costs as much as a small operation on it
    vectors, flat_vectors = basis.unbind(0), flat.unbind(0)
    first: list[torch.Tensor] = []  # first[n] = V[:n] (flat), made when first needed
    first_t: list[torch.Tensor] = []  # their transposes

    def extend_views(n: int) -> None:
        while len(first) <= n:
            first.append(flat[: len(first)])
            first_t.append(first[-1].T)

    while residual >= tol and used < max_iter:
        m = min(restart, max_iter - used)
        torch.mul(r, 1.0 / beta, out=flat_vectors[0])
        cs: list[float] = []
        sn: list[float] = []
        R: list[list[float]] = []  # columns of the rotated, upper triangular I − H
        qtb = [beta]  # Qᵀ β e₁
        for j in range(m):
            vectors[j + 1].copy_(vjp(vectors[j]))
            w = flat_vectors[j + 1]
            used += 1
            extend_views(j + 2)
            proj = torch.mv(first[j + 2], w)  # [Vᵀw; ‖w‖²]
            host = proj.tolist()
            h, ww = host[:-1], host[-1]
            w.addmv_(first_t[j + 1], proj[:-1], alpha=-1.0)
            hh = ww - sum(v * v for v in h)  # ‖w⊥‖² by Pythagoras
            if hh <= 0.5 * ww:  # cancellation: orthogonalise again and measure ‖w⊥‖ directly
                proj = torch.mv(first[j + 2], w)
                host = proj.tolist()
                w.addmv_(first_t[j + 1], proj[:-1], alpha=-1.0)
                h = [a + c for a, c in zip(h, host[:-1], strict=True)]
                hh = host[-1] - sum(v * v for v in host[:-1])
            h_next = math.sqrt(max(hh, 0.0))
            col = [-v for v in h] + [-h_next]  # column j of I − H
            col[j] += 1.0
            for i in range(j):  # previous rotations
                col[i], col[i + 1] = cs[i] * col[i] + sn[i] * col[i + 1], -sn[i] * col[i] + cs[i] * col[i + 1]
            denom = math.hypot(col[j], col[j + 1])
            c, s = (1.0, 0.0) if denom == 0 else (col[j] / denom, col[j + 1] / denom)
            cs.append(c)
            sn.append(s)
            col[j] = denom
            R.append(col[: j + 1])
            qtb.append(-s * qtb[j])
            qtb[j] = c * qtb[j]
            residual = abs(qtb[j + 1]) / b_norm
            if residual < tol or h_next <= 1e-30 * beta:  # converged, or exact (lucky) breakdown
                break
            w.mul_(1.0 / h_next)
        k = len(R)
        extend_views(k)
        y = [0.0] * k
        for i in reversed(range(k)):  # back substitution R y = Qᵀ β e₁
            acc = qtb[i] - sum(R[c][i] * y[c] for c in range(i + 1, k))
            y[i] = acc / R[i][i] if R[i][i] != 0 else 0.0
        x.addmv_(first_t[k], torch.tensor(y, dtype=b.dtype, device=b.device))
        if residual >= tol and used < max_iter:  # restart from the true residual b − x + Jᵀx
            r = b - x + vjp(x.view(rhs.shape)).reshape(-1)
            used += 1
            beta = float(torch.linalg.vector_norm(r))
            residual = beta / b_norm
            if beta == 0:
                break
    return x.view(rhs.shape), SolverInfo(used, residual, residual < tol)


def solve_adjoint(
    vjp: VJP, rhs: torch.Tensor, method: str = "gmres", tol: float = 1e-5, max_iter: int = 50
) -> tuple[torch.Tensor, SolverInfo]:
    """Solve (I − J)ᵀ g = rhs given ``vjp(v) = Jᵀv``.

    Args:
        vjp: vector–Jacobian product of the fixed-point map at its fixed point.
        rhs: the upstream gradient ḡ.
        method: a key of :data:`BACKWARD_SOLVERS`.
        tol: relative tolerance on the residual (or on the update, for the stationary iterations).
        max_iter: most VJPs.
    Returns:
        ``(g, SolverInfo)``.
    Raises:
        KeyError: unknown method.
    """
    try:
        solver = BACKWARD_SOLVERS[method]
    except KeyError:
        raise KeyError(f"unknown backward solver {method!r}; choose one of {sorted(BACKWARD_SOLVERS)}") from None
    return solver(vjp, rhs, tol=tol, max_iter=max_iter)
