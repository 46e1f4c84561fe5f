"""Exact spectral norms ‖W‖₂ = σ_max(W): the numbers every Lipschitz bound and certificate is built from.

σ_max(W)² is the largest eigenvalue of the smaller Gram matrix (W Wᵀ or WᵀW), and a symmetric eigensolver on it
in float64 gives σ_max with the same O(n·u) relative error as an SVD (u = 2⁻⁵³; the Gram matrix loses accuracy
only in the *small* singular values, which a norm does not use) at about 0.7× the cost. A Gram matrix whose top
eigenvalue is so large or so small that its squares may have overflowed or underflowed is recomputed from W divided
by its largest |entry| (as is every matrix of a batch in which the eigensolver fails). Power iteration, by
contrast, only ever approaches σ_max from below: it is never used for a bound.

Norms of many matrices (a deep network's per-layer weights) are computed with one batched eigensolver call per
Gram size: inside :func:`batched_spectral_norms`, :func:`exact_spectral_norm` reads them from that batch.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch

# λ_max of a Gram matrix outside this range is recomputed from W / max|W_ij|: above it a square may have overflowed,
# below it underflowed products may no longer be negligible against λ_max.
_TRUSTED_EIGENVALUES = (1e-280, 1e280)


def gram(matrices: torch.Tensor) -> torch.Tensor:
    """W Wᵀ or WᵀW, whichever is smaller, of each matrix in a (..., m, n) stack."""
    return matrices @ matrices.mT if matrices.shape[-2] <= matrices.shape[-1] else matrices.mT @ matrices


def spectral_norms(matrices: Sequence[torch.Tensor]) -> list[float]:
    """‖W‖₂ of each of ``matrices`` (any shapes and devices), computed in float64 with one batched eigensolver
    call per Gram size and device (a 32×64 embedding joins the 32×32 layers)."""
    groups: dict[tuple[int, torch.device], dict[tuple[int, ...], list[int]]] = {}
    for i, m in enumerate(matrices):
        groups.setdefault((min(m.shape), m.device), {}).setdefault(tuple(m.shape), []).append(i)
    norms = [0.0] * len(matrices)
    for (size, _), by_shape in groups.items():
        if size == 0:
            continue  # an empty matrix has norm 0
        grams = [gram(torch.stack([matrices[i].detach() for i in members]).double()) for members in by_shape.values()]
        order = [i for members in by_shape.values() for i in members]
        try:
            eigenvalues = torch.linalg.eigvalsh(torch.cat(grams))[:, -1].tolist()
        except torch.linalg.LinAlgError:  # an overflowed (non-finite) Gram matrix in the batch
            eigenvalues = [math.nan] * len(order)
        low, high = _TRUSTED_EIGENVALUES
        for i, eigenvalue in zip(order, eigenvalues, strict=True):
            norms[i] = math.sqrt(eigenvalue) if low < eigenvalue < high else _rescaled_norm(matrices[i])
    return norms


def _rescaled_norm(matrix: torch.Tensor) -> float:
    """‖W‖₂ = s·‖W/s‖₂ with s = max |W_ij|, whose Gram matrix can neither overflow nor lose λ_max to underflow."""
    matrix = matrix.detach().double()
    scale = float(matrix.abs().max())
    if scale == 0.0 or not math.isfinite(scale):
        return scale  # a zero matrix; or a non-finite entry, which leaves no finite bound (inf or nan)
    return scale * math.sqrt(max(float(torch.linalg.eigvalsh(gram(matrix / scale))[-1]), 0.0))


_batch = threading.local()  # .norms: id(matrix) → (matrix, ‖matrix‖₂) inside batched_spectral_norms


def exact_spectral_norm(weight: torch.Tensor) -> float:
    """‖W‖₂ of one matrix, computed in float64 — exact, unlike power iteration, which underestimates it; inside
    :func:`batched_spectral_norms`, from that block's batch when W is one of its matrices."""
    memo = getattr(_batch, "norms", None)
    if memo is not None and (hit := memo.get(id(weight))) is not None and hit[0] is weight:
        return hit[1]
    return spectral_norms([weight])[0]


_derived = threading.local()  # .matrices: (id(owner), name) → (owner, matrix) inside shared_derived_matrices


@contextmanager
def shared_derived_matrices() -> Iterator[None]:
    """Within the block, :func:`derived_matrix` builds each (owner, name) once, so the matrix a module's
    ``spectral_norm_matrices()`` hands to :func:`batched_spectral_norms` is the very tensor its
    ``lipschitz_bound()`` later asks :func:`exact_spectral_norm` about (which finds it by identity)."""
    previous = getattr(_derived, "matrices", None)
    _derived.matrices = {} if previous is None else previous
    try:
        yield
    finally:
        _derived.matrices = previous


def derived_matrix(owner: object, name: str, build: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``build()``: a matrix computed from ``owner``'s weights (e.g. diag(√|s|)·W), built once per
    :func:`shared_derived_matrices` block and afresh outside one."""
    matrices = getattr(_derived, "matrices", None)
    if matrices is None:
        return build()
    hit = matrices.get((id(owner), name))
    if hit is None or hit[0] is not owner:
        hit = matrices[(id(owner), name)] = (owner, build())
    return hit[1]


@contextmanager
def batched_spectral_norms(matrices: Iterable[torch.Tensor]) -> Iterator[None]:
    """Within the block, :func:`exact_spectral_norm` of each of ``matrices`` comes from one :func:`spectral_norms`
    call (one eigensolver call per Gram size instead of one per layer). The same exact norms."""
    matrices = list(matrices)
    memo = {id(m): (m, norm) for m, norm in zip(matrices, spectral_norms(matrices), strict=True)}
    previous = getattr(_batch, "norms", None)
    _batch.norms = memo
    try:
        yield
    finally:
        _batch.norms = previous


__all__ = [
    "batched_spectral_norms",
    "derived_matrix",
    "exact_spectral_norm",
    "gram",
    "shared_derived_matrices",
    "spectral_norms",
]
