"""Autograd memory probe: how many bytes of tensors saved for backward are alive at the peak of a computation.

Used by the benchmark (``benchmarks/bench_implicit.py``) and the test that the θ-step's memory does not grow with
solver iterations (``tests/models/test_solvers.py``). Device-independent: it counts the tensors autograd keeps,
not the allocator's pages.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch


class _Saved:
    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


def peak_saved_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes of tensors saved for backward and still alive while ``fn`` runs (e.g. forward + backward)."""
    live = peak = 0

    def release(nbytes: int) -> None:
        nonlocal live
        live -= nbytes

    def pack(t: torch.Tensor) -> _Saved:
        nonlocal live, peak
        nbytes = t.numel() * t.element_size()
        live += nbytes
        peak = max(peak, live)
        box = _Saved(t.detach())  # not t: a saved output's grad_fn would hold its own box (an uncollectable cycle)
        weakref.finalize(box, release, nbytes)
        return box

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda box: box.tensor):
        fn()
    return peak


__all__ = ["peak_saved_bytes"]
