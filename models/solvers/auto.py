"""The ``"auto"`` solver choice of a θ-step: the cheapest pair whose convergence is guaranteed.

The θ-step solves z = b + T(z) with T = hθF. When T is a contraction, q = Lip(T) ≤ θh·Lip(F) < 1 (from exact spectral
norms or sound upper bounds of F's weights — what the localisation of Reshniak & Webster's poster guarantees by
construction), Banach's fixed-point theorem makes Picard iteration converge to the unique fixed point with error
≤ qᵏ/(1 − q)·‖z₁ − z₀‖, and the adjoint (I − Jᵀ)g = ḡ, ‖J‖ ≤ q, is solved by the Neumann series Σₖ (Jᵀ)ᵏḡ with
error ≤ qᵏ⁺¹/(1 − q)·‖ḡ‖. Both cost one evaluation (one VJP) per iteration and nothing else, and the contraction
of a trained layer is usually far better than its bound (benchmarks/bench_implicit.py: 8 iterations at a bound of
0.9). Without such a bound, Anderson acceleration and GMRES, which need no contraction, are the robust choice.

``"auto"`` is opt-in (``solver.forward`` / ``solver.backward``; see ``core.spec.base.AUTO_SOLVER``), each side on its
own; an explicit name is always honoured.
"""

from __future__ import annotations

from core.spec.base import AUTO_SOLVER

#: (forward, backward) when the step is provably contractive, and otherwise
CONTRACTIVE_PAIR = ("fixed_point", "neumann")
GENERAL_PAIR = ("anderson", "gmres")


def resolve_solvers(forward: str, backward: str, contraction: float | None) -> tuple[str, str]:
    """The (forward, backward) solver names to run: ``"auto"`` becomes the contractive pair's method when
    ``contraction`` (a sound upper bound on Lip(hθF), None if there is none) is below 1, else the general pair's."""
    pair = CONTRACTIVE_PAIR if contraction is not None and contraction < 1 else GENERAL_PAIR
    return (pair[0] if forward == AUTO_SOLVER else forward, pair[1] if backward == AUTO_SOLVER else backward)


__all__ = ["AUTO_SOLVER", "CONTRACTIVE_PAIR", "GENERAL_PAIR", "resolve_solvers"]
