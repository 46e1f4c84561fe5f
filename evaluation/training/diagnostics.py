"""What training reports besides its loss: a diverged loss, and the solver diagnostics of implicit steps."""

from __future__ import annotations

import dataclasses

from torch import nn

from models.steps import SolverStats


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class SolverLog:
    """Solver diagnostics of a model's implicit steps during training: :meth:`epoch` returns the worst forward /
    backward iterations and final residuals of the epoch and its count of non-converged solves (each of which also
    raised a ``RuntimeWarning``), then resets the steps' stats; :meth:`finish` returns the same over the whole
    training (``solver_train_*``) and puts those totals back into the steps, so that the runner's ``solver_*``
    metrics cover training and evaluation."""

    def __init__(self, model: nn.Module):
        stats = model.solver_stats() if hasattr(model, "solver_stats") else []
        self.stats = list({id(s): s for s in stats}.values())
        self.totals = [SolverStats() for _ in self.stats]

    @staticmethod
    def summary(stats: list[SolverStats], prefix: str) -> dict[str, float]:
        if not stats:
            return {}
        return {
            f"{prefix}forward_iterations": float(max(s.forward_iterations for s in stats)),
            f"{prefix}forward_residual": max(s.forward_residual for s in stats),
            f"{prefix}backward_iterations": float(max(s.backward_iterations for s in stats)),
            f"{prefix}backward_residual": max(s.backward_residual for s in stats),
            f"{prefix}failures": float(sum(len(s.failures) for s in stats)),
        }

    def epoch(self) -> dict[str, float]:
        out = self.summary(self.stats, "solver_")
        for stats, total in zip(self.stats, self.totals, strict=True):
            total.merge(stats)
            stats.reset()
        return out

    def finish(self) -> dict[str, float]:
        self.epoch()  # anything recorded since the last epoch
        for stats, total in zip(self.stats, self.totals, strict=True):
            stats.merge(total)
        return self.summary(self.totals, "solver_train_")

    def state_dict(self) -> list[dict]:
        """The totals so far (at an epoch's end), for a checkpoint."""
        return [dataclasses.asdict(total) for total in self.totals]

    def load_state_dict(self, totals: list[dict]) -> None:
        self.totals = [SolverStats(**total) for total in totals]


__all__ = ["SolverLog", "TrainingDiverged"]
