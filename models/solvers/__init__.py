"""Solvers of implicit layers, chosen by name (like torchdiffeq's ``method=``).

Forward (nonlinear) solvers find the fixed point z = f(z) of the θ-method map; backward (linear) solvers find the
adjoint g of implicit differentiation, (I − J)ᵀ g = ḡ, from vector–Jacobian products only. All share one signature
and return ``(solution, SolverInfo)``::

    from models.solvers import solve_fixed_point, solve_adjoint
    z, info = solve_fixed_point(f, z0, method="anderson", tol=1e-5, max_iter=50)
    g, info = solve_adjoint(vjp, grad, method="gmres", tol=1e-5, max_iter=50)

Forward methods: ``fixed_point``, ``anderson``, and the minimisers of ½‖z − f(z)‖² ``gradient_descent``, ``ncg_fr``,
``ncg_pr`` (Reshniak & Webster); backward methods: ``fixed_point``, ``neumann``, ``gmres``. Iterations count
evaluations of f (forward; a VJP or JVP of f counts as one) and VJPs (backward). New methods are added with
:func:`register_forward_solver` / :func:`register_backward_solver`.
"""

from models.solvers.backward import BACKWARD_SOLVERS, register_backward_solver, solve_adjoint
from models.solvers.base import SolverInfo
from models.solvers.forward import FORWARD_SOLVERS, register_forward_solver, solve_fixed_point

__all__ = [
    "BACKWARD_SOLVERS",
    "FORWARD_SOLVERS",
    "SolverInfo",
    "register_backward_solver",
    "register_forward_solver",
    "solve_adjoint",
    "solve_fixed_point",
]
