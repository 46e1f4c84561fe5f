"""Every forward and backward solver on closed-form linear problems (float64, CPU and CUDA when present).

Forward: f(z) = Az + b per sample has the fixed point z* = (I − A)⁻¹b. Backward: vjp(v) = Aᵀv per sample, and
(I − Aᵀ)g = ḡ is checked against ``torch.linalg.solve``. A non-contractive but non-singular A separates the
methods that need a contraction (fixed point, Neumann: must say converged=False) from those that do not.
"""

import warnings

import pytest
import torch

from models.memory import peak_saved_bytes
from models.residual import ResidualFunction
from models.solvers import BACKWARD_SOLVERS, FORWARD_SOLVERS, SolverInfo
from models.solvers.backward import adjoint_fixed_point, adjoint_gmres, adjoint_neumann
from models.solvers.forward import anderson_acceleration, fixed_point_iteration
from models.steps import ThetaStep

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
FORWARD = sorted(FORWARD_SOLVERS)
BACKWARD = sorted(BACKWARD_SOLVERS)
DIM, BATCH = 6, 5


def matrix_with_norm(norm: float, seed: int, device: str = "cpu") -> torch.Tensor:
    """A random DIM×DIM matrix with spectral norm ``norm``."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(DIM, DIM, generator=gen, dtype=torch.float64)
    return (norm * a / torch.linalg.matrix_norm(a, 2)).to(device)


def non_contractive(device: str = "cpu") -> torch.Tensor:
    """Spectral radius 2.5 (fixed-point iteration diverges), but I − A is non-singular (no eigenvalue 1)."""
    gen = torch.Generator().manual_seed(7)
    q, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=gen, dtype=torch.float64))
    eig = torch.tensor([2.5, -2.0, 1.8, 0.5, -0.3, 0.1], dtype=torch.float64)
    return (q @ torch.diag(eig) @ q.T).to(device)


def linear_map(a: torch.Tensor, b: torch.Tensor):
    return lambda z: z @ a.T + b  # f(z_i) = A z_i + b_i for every sample i


def exact_fixed_point(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(DIM, dtype=a.dtype, device=a.device)
    return torch.linalg.solve(eye - a, b.T).T


def exact_adjoint(a: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(DIM, dtype=a.dtype, device=a.device)
    return torch.linalg.solve(eye - a.T, rhs.T).T


def rhs_for(device: str, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, DIM, generator=gen, dtype=torch.float64).to(device)


# --- forward ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", FORWARD)
def test_forward_solver_finds_the_fixed_point_of_a_linear_contraction(method, device):
    a, b = matrix_with_norm(0.5, seed=0, device=device), rhs_for(device)
    with torch.no_grad():
        z, info = FORWARD_SOLVERS[method](linear_map(a, b), torch.zeros_like(b), tol=1e-11, max_iter=1000)
    assert isinstance(info, SolverInfo) and info.converged, info
    assert info.iterations <= 1000
    torch.testing.assert_close(z, exact_fixed_point(a, b), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("method", FORWARD)
def test_forward_solver_never_exceeds_max_iter_and_reports_failure(method):
    a, b = matrix_with_norm(0.99, seed=2), rhs_for("cpu")
    with torch.no_grad():
        z, info = FORWARD_SOLVERS[method](linear_map(a, b), torch.zeros_like(b), tol=1e-30, max_iter=7)
    assert not info.converged
    assert 1 <= info.iterations <= 7
    assert torch.isfinite(z).all()


@pytest.mark.parametrize("method", ["gradient_descent", "ncg_fr", "ncg_pr"])
def test_residual_minimisers_converge_where_fixed_point_iteration_diverges(method):
    a, b = non_contractive(), rhs_for("cpu")
    f = linear_map(a, b)
    with torch.no_grad():
        z, info = FORWARD_SOLVERS[method](f, torch.zeros_like(b), tol=1e-10, max_iter=3000)
        _, picard = FORWARD_SOLVERS["fixed_point"](f, torch.zeros_like(b), tol=1e-10, max_iter=200)
    assert info.converged, info
    torch.testing.assert_close(z, exact_fixed_point(a, b), rtol=1e-8, atol=1e-8)
    assert not picard.converged


def test_conjugate_gradients_are_exact_on_a_linear_problem_within_dim_steps():
    """With the exact line search, NCG on a linear r is CG on the normal equations: ≤ DIM steps (3 evals each)."""
    a, b = matrix_with_norm(0.9, seed=3), rhs_for("cpu")
    for method in ("ncg_fr", "ncg_pr"):
        with torch.no_grad():
            z, info = FORWARD_SOLVERS[method](linear_map(a, b), torch.zeros_like(b), tol=1e-10,
                                              max_iter=1 + 3 * (DIM + 2))
        assert info.converged, (method, info)
        torch.testing.assert_close(z, exact_fixed_point(a, b), rtol=1e-8, atol=1e-8)


def test_checking_the_residual_every_few_iterations_gives_the_same_fixed_point():
    a, b = matrix_with_norm(0.6, seed=4), rhs_for("cpu")
    f, z0 = linear_map(a, b), torch.zeros_like(b)
    with torch.no_grad():
        for solver in (fixed_point_iteration, anderson_acceleration):
            z1, i1 = solver(f, z0, tol=1e-11, max_iter=300, check_every=1)
            z3, i3 = solver(f, z0, tol=1e-11, max_iter=300, check_every=3)
            assert i1.converged and i3.converged
            assert i3.iterations % 3 == 0 and i1.iterations <= i3.iterations < i1.iterations + 3
            torch.testing.assert_close(z3, z1, rtol=1e-9, atol=1e-9)


def test_anderson_keeps_samples_that_are_already_at_their_fixed_point_finite():
    a, b = matrix_with_norm(0.5, seed=5), rhs_for("cpu")
    b[0] = 0.0  # sample 0 starts exactly at its fixed point z = 0: zero Gram matrix, any mixing weights do
    with torch.no_grad():
        z, info = anderson_acceleration(linear_map(a, b), torch.zeros_like(b), tol=1e-11, max_iter=100)
    assert info.converged and torch.isfinite(z).all()
    torch.testing.assert_close(z, exact_fixed_point(a, b), rtol=1e-9, atol=1e-9)


# --- backward --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", BACKWARD)
def test_backward_solver_matches_a_direct_solve_for_a_contraction(method, device):
    a, rhs = matrix_with_norm(0.6, seed=6, device=device), rhs_for(device, seed=2)
    g, info = BACKWARD_SOLVERS[method](lambda v: v @ a, rhs, tol=1e-11, max_iter=500)
    assert info.converged, info
    torch.testing.assert_close(g, exact_adjoint(a, rhs), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("method", BACKWARD)
def test_only_gmres_solves_a_non_contractive_adjoint_and_the_others_say_so(method):
    a, rhs = non_contractive(), rhs_for("cpu", seed=3)
    g, info = BACKWARD_SOLVERS[method](lambda v: v @ a, rhs, tol=1e-10, max_iter=60)
    if method == "gmres":
        assert info.converged, info
        torch.testing.assert_close(g, exact_adjoint(a, rhs), rtol=1e-8, atol=1e-8)
    else:
        assert not info.converged, info  # diverges: must be reported, not returned as if it were the answer
        assert info.iterations == 60


def test_restarted_gmres_converges_and_counts_every_vjp():
    a, rhs = non_contractive(), rhs_for("cpu", seed=4)
    calls = []

    def vjp(v):
        calls.append(1)
        return v @ a

    g, info = adjoint_gmres(vjp, rhs, tol=1e-10, max_iter=400, restart=3)
    assert info.converged, info
    assert info.iterations == len(calls) <= 400
    torch.testing.assert_close(g, exact_adjoint(a, rhs), rtol=1e-8, atol=1e-8)


def test_stationary_backward_solvers_with_sparse_residual_checks():
    a, rhs = matrix_with_norm(0.6, seed=8), rhs_for("cpu", seed=5)
    for solver in (adjoint_fixed_point, adjoint_neumann):
        g, info = solver(lambda v: v @ a, rhs, tol=1e-11, max_iter=500, check_every=4)
        assert info.converged and info.iterations % 4 == 0
        torch.testing.assert_close(g, exact_adjoint(a, rhs), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("method", BACKWARD)
def test_backward_solvers_return_zero_for_a_zero_gradient(method):
    a = matrix_with_norm(0.5, seed=9)
    g, info = BACKWARD_SOLVERS[method](lambda v: v @ a, torch.zeros(BATCH, DIM, dtype=torch.float64), 1e-8, 10)
    assert info.converged and not g.any()


# --- the layer's memory does not grow with solver iterations ---------------------------------------------------


def peak_saved_tensor_bytes(step: ThetaStep, x: torch.Tensor) -> int:
    """Peak bytes of tensors saved for backward and still alive, over one forward + backward."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # tol = 0: the solver runs out of iterations on purpose
        return peak_saved_bytes(lambda: step(x).square().sum().backward())


@pytest.mark.parametrize("forward", FORWARD)
def test_autograd_memory_of_a_theta_step_does_not_depend_on_forward_iterations(forward):
    torch.manual_seed(0)
    step = ThetaStep(ResidualFunction(8, 8), h=0.5, theta=1.0)
    step.solver.forward, step.solver.tol = forward, 0.0
    x = torch.randn(16, 8, requires_grad=True)
    step.solver.max_iter = 10
    few = peak_saved_tensor_bytes(step, x)
    step.solver.max_iter = 40
    many = peak_saved_tensor_bytes(step, x)
    assert few == many > 0
