"""What every solver returns besides its solution."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SolverInfo:
    """Diagnostics of one solve: ``residual`` is relative, ‖f(z) − z‖ / ‖f(z)‖ over the whole batch."""

    iterations: int
    residual: float
    converged: bool


def check_interval(like: torch.Tensor, every: int | None = None) -> int:
    """How many iterations pass between two reads of the residual on the host.

    On CPU a read costs nothing, so every iteration is checked (no wasted iterations). On an accelerator each read
    is a synchronisation that stalls the queue of kernels, so by default only every 4th iteration is checked.
    """
    if every is not None:
        return max(1, int(every))
    return 1 if like.device.type == "cpu" else 4
