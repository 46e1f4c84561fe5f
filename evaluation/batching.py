"""Mini-batches over the test set: every evaluation walks the test samples ``evaluate.batch_size`` at a time, so
peak memory grows with the batch, never with ``n_test`` beyond the data itself."""

from __future__ import annotations

from core.spec.evaluate import EVAL_BATCH


def batch_slices(n: int, batch_size: int | None = None) -> list[slice]:
    """Consecutive slices of ``batch_size`` (default ``EVAL_BATCH``) over ``range(n)``; the last may be shorter."""
    size = batch_size or EVAL_BATCH
    if size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {size}")
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


__all__ = ["EVAL_BATCH", "batch_slices"]
