"""Exact spectral norms (models.spectral_norms) agree with a float64 SVD to rounding, for every shape and scale."""

import math

import pytest
import torch

from models.spectral_norms import (
    batched_spectral_norms,
    derived_matrix,
    exact_spectral_norm,
    shared_derived_matrices,
    spectral_norms,
)


def svd_norm(matrix: torch.Tensor) -> float:
    return float(torch.linalg.svdvals(matrix.double())[0]) if matrix.numel() else 0.0


def awkward_matrices() -> list[torch.Tensor]:
    """Square, tall, wide, rank one, repeated top singular value, ill-conditioned, zero and extreme scales."""
    gen = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(16, 16, generator=gen, dtype=torch.float64)).Q
    graded = q @ torch.diag(torch.logspace(0, -14, 16, dtype=torch.float64)) @ q.T
    return [
        *(torch.randn(32, 32, generator=gen) for _ in range(3)),
        torch.randn(32, 64, generator=gen),
        torch.randn(64, 32, generator=gen),
        torch.randn(10, 32, generator=gen),
        torch.randn(2, 32, generator=gen),
        torch.randn(32, 1, generator=gen),
        torch.outer(torch.randn(16, generator=gen), torch.randn(16, generator=gen)),
        3.0 * q,  # every singular value 3: no gap at the top
        graded,
        torch.zeros(4, 5),
        1e200 * torch.randn(6, 6, generator=gen, dtype=torch.float64),  # σ² would overflow float64 unscaled
        1e-200 * torch.randn(6, 6, generator=gen, dtype=torch.float64),  # … and underflow to 0
    ]


def test_batched_norms_match_svd_for_every_shape_and_scale():
    matrices = awkward_matrices()
    norms = spectral_norms(matrices)
    for matrix, norm in zip(matrices, norms, strict=True):
        assert norm == pytest.approx(svd_norm(matrix), rel=1e-13, abs=0.0), tuple(matrix.shape)


def test_one_matrix_at_a_time_gives_the_batched_numbers():
    matrices = awkward_matrices()
    one_by_one = [exact_spectral_norm(m) for m in matrices]
    assert one_by_one == pytest.approx(spectral_norms(matrices), rel=1e-13, abs=0.0)


def test_exact_spectral_norm_reads_the_batch_inside_the_block_only():
    matrices = awkward_matrices()[:4]
    with batched_spectral_norms(matrices):
        inside = [exact_spectral_norm(m) for m in matrices]
        other = torch.randn(5, 5)
        assert exact_spectral_norm(other) == pytest.approx(svd_norm(other), rel=1e-13)
    for matrix, norm in zip(matrices, inside, strict=True):
        assert norm == pytest.approx(svd_norm(matrix), rel=1e-13)
    # a different tensor with the same id() after the block must not hit a stale entry
    assert exact_spectral_norm(2 * matrices[0]) == pytest.approx(2 * svd_norm(matrices[0]), rel=1e-13)


def test_never_below_what_a_unit_vector_achieves():
    """Soundness where it matters: ‖W‖₂ ≥ ‖Wv‖ for the top right-singular vector v (float64)."""
    for matrix in awkward_matrices():
        if matrix.numel() == 0 or not matrix.any():
            continue
        scale = float(matrix.abs().max())  # ‖Wv‖ itself would overflow for the 1e200 matrix
        w = matrix.double() / scale
        v = torch.linalg.svd(w).Vh[0]
        assert exact_spectral_norm(matrix) / scale >= float((w @ v).norm()) * (1 - 1e-14)


def test_a_non_finite_weight_gives_no_finite_norm():
    """A diverged weight must not produce a finite (unsound) norm, nor crash the eigensolver."""
    weight = torch.randn(8, 8)
    weight[2, 3] = float("inf")
    assert exact_spectral_norm(weight) == float("inf")
    weight[2, 3] = float("nan")
    norms = spectral_norms([weight, torch.eye(8)])
    assert math.isnan(norms[0]) and norms[1] == pytest.approx(1.0, rel=1e-15)


def test_a_derived_matrix_is_built_once_per_block_so_the_batch_serves_its_bound():
    owner, other = object(), object()
    builds = []

    def build():
        builds.append(1)
        return torch.randn(4, 3)

    assert derived_matrix(owner, "w", build) is not derived_matrix(owner, "w", build)  # no block: afresh
    with shared_derived_matrices():
        first = derived_matrix(owner, "w", build)
        assert derived_matrix(owner, "w", build) is first
        assert derived_matrix(other, "w", build) is not first and derived_matrix(owner, "v", build) is not first
        with batched_spectral_norms([first]):
            assert exact_spectral_norm(derived_matrix(owner, "w", build)) == pytest.approx(svd_norm(first), rel=1e-13)
    assert len(builds) == 2 + 3
    assert derived_matrix(owner, "w", build) is not first  # the block's matrices are gone with it
