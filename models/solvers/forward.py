"""Forward solvers: find z with z = f(z), where f is the θ-method map z ↦ x + h(1−θ)F(x) + hθF(z) (Reshniak & Webster,
eq. 7).

* ``fixed_point`` — Picard iteration z ← f(z); converges when f is a contraction (hθ·Lip F < 1).
* ``anderson`` — Anderson acceleration (Walker & Ni, "Anderson acceleration for fixed-point iterations", 2011):
  mixes the last ``memory`` iterates, usually far fewer evaluations of F.
* ``gradient_descent``, ``ncg_fr``, ``ncg_pr`` — minimise ½‖r(z)‖², r(z) = z − f(z) (Reshniak & Webster, eq. 8) by
  gradient descent or nonlinear conjugate gradients (Fletcher–Reeves; Polak–Ribière with the PR+ restart
  β = max(β, 0)). The gradient (I − ∂f/∂z)ᵀ r is one vector–Jacobian product of f; the step length is the exact
  minimiser of the Gauss–Newton model ‖r + λ(I − ∂f/∂z)d‖² (one Jacobian–vector product, by differentiating the
  VJP once more), safeguarded by Armijo backtracking on the true ‖r‖². They do not need f to be a contraction,
  only I − ∂f/∂z to be non-singular (and f twice differentiable). They cost three evaluations of f per step, so
  on a contraction they are slower than ``fixed_point``/``anderson``: they are the robust choice, not the fast one.

All run without recording gradients (:func:`solve_fixed_point`: ``torch.inference_mode()``, or ``torch.no_grad()``
for the solvers registered with ``uses_autograd``): gradients come from implicit differentiation, never from the
iterations, so memory does not grow with them. The residual-minimising solvers switch autograd on locally, on a
detached copy of z, to get their vector–Jacobian products (f must be differentiable in z; the θ-method map with
frozen weights is).

Every solver treats the first dimension as a batch of independent problems (per-sample Anderson weights, per-sample
step lengths), stops on the relative residual ‖f(z) − z‖ / ‖f(z)‖ of the whole batch, and reports in
``SolverInfo.iterations`` the evaluations of f it used, counting each VJP and each JVP of f as one evaluation.
``max_iter`` bounds that count. Example::

    z, info = FORWARD_SOLVERS["ncg_pr"](lambda z: 0.5 * torch.tanh(z) + 1, torch.zeros(8, 3), tol=1e-6, max_iter=60)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from models.solvers.base import SolverInfo, check_interval

FixedPointMap = Callable[[torch.Tensor], torch.Tensor]
ForwardSolver = Callable[..., tuple[torch.Tensor, SolverInfo]]
FORWARD_SOLVERS: dict[str, ForwardSolver] = {}
USES_AUTOGRAD: set[str] = set()  # solvers that differentiate f themselves (the others run in inference mode)


def register_forward_solver(name: str, uses_autograd: bool = False):
    def register(fn: ForwardSolver) -> ForwardSolver:
        FORWARD_SOLVERS[name] = fn
        if uses_autograd:
            USES_AUTOGRAD.add(name)
        return fn

    return register


def _relative(fz: torch.Tensor, z: torch.Tensor) -> float:
    """‖f(z) − z‖ / ‖f(z)‖ over the whole batch (two reductions read back to the host)."""
    return float(torch.dist(fz, z)) / (float(torch.linalg.vector_norm(fz)) + 1e-12)


@register_forward_solver("fixed_point")
def fixed_point_iteration(
    f: FixedPointMap, z0: torch.Tensor, tol: float, max_iter: int, check_every: int | None = None
) -> tuple[torch.Tensor, SolverInfo]:
    """Picard iteration z_{k+1} = f(z_k) (Reshniak & Webster, eq. 8); returns the last f(z_k).

    The residual is read back to the host every ``check_every`` iterations (default: every iteration on CPU, where
    that costs nothing, every 4 on accelerators, where each read is a synchronisation).
    """
    every = check_interval(z0, check_every)
    z = z0
    residual = float("inf")
    for k in range(1, max_iter + 1):
        fz = f(z)
        if k % every == 0 or k == max_iter:
            residual = _relative(fz, z)
            if residual < tol:
                return fz, SolverInfo(k, residual, True)
        z = fz
    return z, SolverInfo(max_iter, residual, False)


@register_forward_solver("anderson")
def anderson_acceleration(
    f: FixedPointMap,
    z0: torch.Tensor,
    tol: float,
    max_iter: int,
    memory: int = 5,
    ridge: float = 1e-4,
    beta: float = 1.0,
    check_every: int | None = None,
) -> tuple[torch.Tensor, SolverInfo]:
    """Anderson acceleration (type II) with per-sample mixing weights.

    Each step solves, per sample, min_α ‖Σ α_i g_i‖ subject to Σ α_i = 1 over the last ``memory`` residuals
    g_i = f(z_i) − z_i, i.e. α ∝ (GGᵀ + λI)⁻¹1 with a ridge λ = ``ridge``·tr(GGᵀ)/n relative to the Gram matrix's
    scale, then sets z = Σ α_i f(z_i) − (1−β) Σ α_i g_i. Cost per step besides f: one row of the Gram matrix (it is
    updated, not recomputed), one batched (n×n) solve and one mixing. The history [f(z_i); g_i] is preallocated
    slot-major in one buffer, so that writing an iterate is one contiguous copy, both norms of the convergence test
    are one reduction, and the per-sample contractions are elementwise products (the many tiny matrix products of
    ``torch.bmm`` cost more than an evaluation of F at the sizes of this project). At these sizes every tensor
    operation costs mostly its fixed dispatch overhead, so the loop is written to issue as few as possible.
    """
    batch, shape = z0.shape[0], z0.shape
    m = max(1, min(memory, max_iter))
    every = check_interval(z0, check_every)
    history = z0.new_empty(2, m, batch, z0[0].numel())  # [f(z_i); g_i], flattened per sample, slot-major
    gram = z0.new_zeros(m, m, batch)  # ⟨g_i, g_j⟩ per sample, batch last: a row of it is one contiguous write
    scratch = history.new_empty(m, batch, history.shape[-1])  # the products of the contractions, reused
    # views made once (indexing costs as much as a small operation); slices of them only while the history fills
    both, Fs, Gs = history.unbind(1), history[0].unbind(0), history[1].unbind(0)
    rows, cols = gram.unbind(0), gram.unbind(1)
    systems = gram.permute(2, 0, 1)  # (batch, m, m)
    diagonal = systems.diagonal(dim1=1, dim2=2)[:, :, None]  # (batch, m, 1); zero beyond the filled slots
    ones = z0.new_ones(batch, m, 1)
    eye = torch.eye(m, dtype=z0.dtype, device=z0.device)
    ridge_eye = eye * (ridge / m)
    # ridge λ = ridge·tr(GGᵀ)/n; the trace is floored so that λ⁻¹ stays finite for a sample already exactly at its
    # fixed point (GGᵀ = 0: then the weights are uniform)
    floor = 4 * m * m / (ridge * torch.finfo(z0.dtype).max)

    z = z0.reshape(batch, -1)
    flat = z0.dim() == 2  # states are already (batch, features): no reshaping around f
    residual = float("inf")
    for k in range(1, max_iter + 1):
        fz = f(z) if flat else f(z.view(shape)).view(batch, -1)
        slot, n = (k - 1) % m, min(k, m)
        g = torch.sub(fz, z, out=Gs[slot])
        Fs[slot].copy_(fz)
        if k % every == 0 or k == max_iter:
            fz_norm, g_norm = torch.linalg.vector_norm(both[slot], dim=(1, 2)).tolist()
            residual = g_norm / (fz_norm + 1e-12)
            if residual < tol:
                return fz.view(shape), SolverInfo(k, residual, True)
        if k == max_iter:
            break
        full = n == m
        G = history[1] if full else history[1, :n]
        row = torch.mul(G, g, out=scratch if full else scratch[:n]).sum(-1)  # ⟨g_i, g⟩ per sample: (n, batch)
        (rows[slot] if full else rows[slot][:n]).copy_(row)
        (cols[slot] if full else cols[slot][:n]).copy_(row)
        if n == 1:  # nothing to mix yet: a plain (damped) fixed-point step
            z = fz if beta == 1.0 else fz - (1 - beta) * g
            continue
        trace = diagonal.sum(dim=1, keepdim=True).clamp_min_(floor)  # (batch, 1, 1)
        if full:
            system = torch.addcmul(systems, trace, ridge_eye)  # GGᵀ + λI
        else:
            system = torch.addcmul(systems[:, :n, :n], trace, eye[:n, :n], value=ridge / n)
        w = torch.linalg.solve_ex(system, ones if full else ones[:, :n])[0]
        alpha = (w / w.sum(dim=1, keepdim=True)).transpose(0, 1)  # (n, batch, 1)
        z = torch.mul(alpha, history[0] if full else history[0, :n], out=scratch if full else scratch[:n]).sum(0)
        if beta != 1.0:
            z = z - (1 - beta) * (alpha * G).sum(0)
    return fz.view(shape), SolverInfo(max_iter, residual, False)


# --- minimisation of ½‖r(z)‖², r(z) = z − f(z) (Reshniak & Webster, eq. 8 and the two updates after it)
# -----------------


def _batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner products of (batch, n) tensors, shape (batch, 1)."""
    return (a * b).sum(dim=1, keepdim=True)


def _minimise_residual(
    f: FixedPointMap,
    z0: torch.Tensor,
    tol: float,
    max_iter: int,
    beta_rule: str | None,
    armijo: float = 1e-4,
    max_backtracks: int = 20,
) -> tuple[torch.Tensor, SolverInfo]:
    """Descent on φ(z) = ½‖r(z)‖² with per-sample directions and step lengths.

    One iteration costs three evaluations of f: the gradient ∇φ = r − (∂f/∂z)ᵀr (a VJP on the graph of f(z)),
    the product (I − ∂f/∂z)d for the step λ = −⟨∇φ, d⟩ / ‖(I − ∂f/∂z)d‖² (a JVP: the VJP u ↦ (∂f/∂z)ᵀu is
    recorded and differentiated in u, cheaper here than forward-mode AD), and f at the new point, with graph,
    which the next iteration needs anyway. For a linear f the model is exact: NCG is then CG on the normal
    equations. Where the new point does not pass the Armijo test
    φ(z + λd) ≤ φ(z) + c·λ⟨∇φ, d⟩, λ is halved for that sample (one more evaluation per halving).
    """
    batch, shape = z0.shape[0], z0.shape

    def f_flat(u: torch.Tensor) -> torch.Tensor:
        return f(u.reshape(shape)).reshape(batch, -1)

    def evaluate(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        leaf = u.detach().requires_grad_(True)
        with torch.enable_grad():
            fu = f_flat(leaf)
        return leaf, fu, (u - fu).detach()

    def relative(fu: torch.Tensor, r: torch.Tensor) -> float:
        return float(torch.linalg.vector_norm(r) / (torch.linalg.vector_norm(fu.detach()) + 1e-12))

    noise = (4 * torch.finfo(z0.dtype).eps) ** 2

    def not_decreasing(
        rr_new: torch.Tensor, rr: torch.Tensor, fu: torch.Tensor, lam: torch.Tensor, slope: torch.Tensor
    ) -> torch.Tensor:
        # Armijo on ½‖r‖², per sample; a residual at rounding level (relative to ‖f‖) always passes
        fu = fu.detach()
        return (rr_new > rr + 2 * armijo * lam * slope) & (rr_new > noise * _batch_dot(fu, fu))

    z = z0.reshape(batch, -1).detach()
    leaf, fz, r = evaluate(z)
    evals = 1
    residual = relative(fz, r)
    rr = _batch_dot(r, r)
    grad_prev = gg_prev = d = None
    while residual >= tol and evals + 3 <= max_iter:
        if not fz.requires_grad:  # f does not depend on z: f(z) is the fixed point
            z, residual = fz.detach(), 0.0
            break
        # Jᵀu at u = r, recorded as a function of u: its VJP with d gives Jd below (the double-backward trick)
        u = r.requires_grad_(True)
        with torch.enable_grad():
            jtu = torch.autograd.grad(fz, leaf, u, create_graph=True)[0]
        r = r.detach()
        grad = r - jtu.detach()  # ∇φ = (I − ∂f/∂z)ᵀ r
        evals += 1
        gg = _batch_dot(grad, grad)
        if d is None or beta_rule is None:
            d = -grad
        else:
            if beta_rule == "fr":  # Fletcher–Reeves
                beta = gg / gg_prev.clamp_min(torch.finfo(gg.dtype).tiny)
            else:  # Polak–Ribière with the PR+ restart
                beta = (_batch_dot(grad, grad - grad_prev) / gg_prev.clamp_min(torch.finfo(gg.dtype).tiny)).clamp_min(0)
            d = beta * d - grad
            slope = _batch_dot(grad, d)
            d = torch.where(slope < 0, d, -grad)  # not a descent direction: restart with steepest descent
        slope = _batch_dot(grad, d)  # = ⟨r, (I − ∂f/∂z)d⟩ < 0 unless ∇φ = 0
        jd = torch.autograd.grad(jtu, u, d, allow_unused=True)[0] if jtu.requires_grad else None
        ad = d if jd is None else d - jd  # (I − ∂f/∂z) d
        evals += 1
        del jtu, u, jd
        fz = fz.detach()  # this point's graph is no longer needed: free it before evaluating the next one
        lam = -slope / _batch_dot(ad, ad).clamp_min(torch.finfo(ad.dtype).tiny)
        grad_prev, gg_prev = grad, gg

        z_new = z + lam * d
        leaf_new, fz_new, r_new = evaluate(z_new)
        evals += 1
        rr_new = _batch_dot(r_new, r_new)
        for _ in range(max_backtracks):
            bad = not_decreasing(rr_new, rr, fz_new, lam, slope)
            if not bool(bad.any()) or evals >= max_iter:
                break
            lam = torch.where(bad, 0.5 * lam, lam)
            z_new = z + lam * d
            leaf_new, fz_new, r_new = evaluate(z_new)
            evals += 1
            rr_new = _batch_dot(r_new, r_new)
        else:
            bad = not_decreasing(rr_new, rr, fz_new, lam, slope)
        if bool(bad.any()):  # no decrease found for these samples: stay, and restart their direction
            keep = bad.expand_as(z)
            z_new = torch.where(keep, z, z_new)
            if evals >= max_iter:
                fz_new, r_new = torch.where(keep, fz, fz_new.detach()), torch.where(keep, r, r_new)
            else:
                leaf_new, fz_new, r_new = evaluate(z_new)
                evals += 1
            d = torch.where(bad, torch.zeros_like(d), d)
            rr_new = _batch_dot(r_new, r_new)
        z, leaf, fz, r, rr = z_new, leaf_new, fz_new, r_new, rr_new
        del leaf_new, fz_new
        residual = relative(fz, r)
    return z.reshape(shape), SolverInfo(evals, residual, residual < tol)


@register_forward_solver("gradient_descent", uses_autograd=True)
def gradient_descent(f: FixedPointMap, z0: torch.Tensor, tol: float, max_iter: int) -> tuple[torch.Tensor, SolverInfo]:
    """Steepest descent on ½‖z − f(z)‖² with an exact line search on the Gauss–Newton model (Reshniak & Webster)."""
    return _minimise_residual(f, z0, tol, max_iter, beta_rule=None)


@register_forward_solver("ncg_fr", uses_autograd=True)
def ncg_fletcher_reeves(
    f: FixedPointMap, z0: torch.Tensor, tol: float, max_iter: int
) -> tuple[torch.Tensor, SolverInfo]:
    """Nonlinear conjugate gradients on ½‖z − f(z)‖², β = ‖∇φ_k‖² / ‖∇φ_{k−1}‖² (Fletcher–Reeves)."""
    return _minimise_residual(f, z0, tol, max_iter, beta_rule="fr")


@register_forward_solver("ncg_pr", uses_autograd=True)
def ncg_polak_ribiere(
    f: FixedPointMap, z0: torch.Tensor, tol: float, max_iter: int
) -> tuple[torch.Tensor, SolverInfo]:
    """Nonlinear conjugate gradients on ½‖z − f(z)‖², β = max(⟨∇φ_k, ∇φ_k − ∇φ_{k−1}⟩ / ‖∇φ_{k−1}‖², 0)
    (Polak–Ribière with the PR+ restart)."""
    return _minimise_residual(f, z0, tol, max_iter, beta_rule="pr")


def solve_fixed_point(
    f: FixedPointMap, z0: torch.Tensor, method: str = "anderson", tol: float = 1e-5, max_iter: int = 50
) -> tuple[torch.Tensor, SolverInfo]:
    """Solve z = f(z) from z0 with the named method, without recording gradients.

    Solvers that do not differentiate f run under ``torch.inference_mode`` (no version counters or view tracking:
    cheaper small operations); their solution is copied out of it once, so that autograd may save it.

    Args:
        f: the fixed-point map; batch first, samples independent.
        z0: initial guess (its shape is the state's shape, batch first).
        method: a key of :data:`FORWARD_SOLVERS`.
        tol: stop when the relative residual ‖f(z) − z‖/‖f(z)‖ is below it.
        max_iter: most evaluations of ``f``, each VJP or JVP of ``f`` counting as one.
    Returns:
        ``(z, SolverInfo)``; ``info.converged`` is False when ``max_iter`` ran out first.
    Raises:
        KeyError: unknown method.
    """
    try:
        solver = FORWARD_SOLVERS[method]
    except KeyError:
        raise KeyError(f"unknown forward solver {method!r}; choose one of {sorted(FORWARD_SOLVERS)}") from None
    if method in USES_AUTOGRAD:
        with torch.no_grad():
            return solver(f, z0, tol=tol, max_iter=max_iter)
    with torch.inference_mode():
        z, info = solver(f, z0, tol=tol, max_iter=max_iter)
    return z.clone(), info
