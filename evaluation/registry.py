"""The evaluation registry: each evaluation module registers the step that runs it inside a job.

::

    @register_evaluation("gaussian", tasks=CLASSIFICATION, position=10)
    def run_gaussian(ctx: Context) -> None:
        ctx.step("gaussian")
        ctx.metrics.update(gaussian_noise_accuracy(ctx.model, ctx.x, ctx.y, ...))

:func:`run_evaluations` runs, in ``position`` order, every registered evaluation of the data's task that the spec
asks for (by default: its ``evaluate.<name>`` section is set). A step reads the model, the test data and the spec
from the :class:`Context` and writes its metrics, its ``info`` entries, its per-sample outcomes and its warnings
there. Which modules hold evaluations is said once, in :data:`core.protocol.EVALUATIONS` (with each one's protocol
revision): they are imported here, which registers them. The relations between evaluations' numbers (certified ≤
attacked ≤ clean, …) are checked by the runner after all of them ran.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from core.protocol import EVALUATIONS as EVALUATION_MODULES
from core.spec import JobSpec

CLASSIFICATION: tuple[str, ...] = ("classification",)
REGRESSION: tuple[str, ...] = ("regression", "denoising")


@dataclass
class Context:
    """What a job's evaluation steps share: the eval-mode model, the test data on its device, the spec, and where
    the steps put their results (``per_sample``: classification metrics' per-sample boolean outcomes)."""

    model: nn.Module
    spec: JobSpec
    data: Any  # evaluation.datasets.Dataset
    x: torch.Tensor
    y: torch.Tensor
    progress: Callable[[dict], None]
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    per_sample: dict[str, torch.Tensor] = field(default_factory=dict)
    clean_logits: torch.Tensor | None = None

    def step(self, name: str) -> None:
        """Report the evaluation step now running (the job's progress)."""
        self.progress({"phase": "evaluate", "step": name})

    def warn(self, message: str) -> None:
        self.info.setdefault("warnings", []).append(message)


Step = Callable[[Context], None]


@dataclass(frozen=True)
class Evaluation:
    """A registered evaluation: ``run(ctx)`` for jobs of ``tasks`` when ``wanted(ctx)``; ``position`` orders it
    among the others (the same order for every job, so seeded draws are reproducible)."""

    name: str
    tasks: tuple[str, ...]
    run: Step
    wanted: Callable[[Context], bool]
    position: int


_REGISTERED: dict[tuple[str, str], Evaluation] = {}


def _spec_section_set(name: str) -> Callable[[Context], bool]:
    return lambda ctx: getattr(ctx.spec.evaluate, name, None) is not None


def register_evaluation(
    name: str, tasks: tuple[str, ...], position: int, wanted: Callable[[Context], bool] | None = None
) -> Callable[[Step], Step]:
    """Register ``run(ctx)`` as evaluation ``name`` for ``tasks`` (once per name and task). ``wanted`` defaults to
    "the spec's ``evaluate.<name>`` is set"."""

    def register(run: Step) -> Step:
        for task in tasks:
            if (name, task) in _REGISTERED:
                raise ValueError(f"evaluation {name!r} is registered twice for task {task!r}")
            _REGISTERED[(name, task)] = Evaluation(name, tasks, run, wanted or _spec_section_set(name), position)
        return run

    return register


def registered(task: str) -> list[Evaluation]:
    """The evaluations registered for ``task``, in ``position`` order (importing every evaluation module first)."""
    for module in dict.fromkeys(EVALUATION_MODULES.values()):
        importlib.import_module(module)
    found = [e for (_, t), e in _REGISTERED.items() if t == task]
    return sorted(found, key=lambda e: (e.position, e.name))


def run_evaluations(ctx: Context) -> list[str]:
    """Run every registered evaluation of the data's task that the spec asks for; returns their names."""
    ran = []
    for evaluation in registered(ctx.data.task):
        if evaluation.wanted(ctx):
            evaluation.run(ctx)
            ran.append(evaluation.name)
    return ran


__all__ = ["CLASSIFICATION", "REGRESSION", "Context", "Evaluation", "register_evaluation", "registered",
           "run_evaluations"]  # fmt: skip
