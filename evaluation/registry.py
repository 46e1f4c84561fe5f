"""The evaluation registry: each evaluation module registers the step that runs it inside a job.

::

    @register_evaluation("gaussian", tasks=CLASSIFICATION, position=10)
    def run_gaussian(ctx: Context) -> None:
        ctx.step("gaussian")
        ctx.metrics.update(gaussian_noise_accuracy(ctx.model, ctx.x, ctx.y, ...))

:func:`run_evaluations` runs, in ``position`` order, every registered evaluation of the data's task that the spec
asks for (by default: its ``evaluate.<name>`` section is set), each timed into the metric ``eval_seconds_<name>``.
A step reads the model, the test data and the spec from the :class:`Context` and writes its metrics, its ``info``
entries, its per-sample outcomes and its warnings there. Which modules hold evaluations is said once, in
:data:`core.protocol.EVALUATIONS` (with each one's protocol revision): they are imported here, which registers them.

Each evaluation also registers its **sanity relations**: ``sanity(metrics) -> {relation: holds}`` over the job's
metrics, e.g. the certificate's ``certified_l2_acc@ε ≤ robust_l2_acc@ε ≤ clean_acc``. A relation speaks only of the
metrics present, so :func:`check_relations` runs every registered one after all evaluations ran; the runner fails
the job, storing nothing, when one breaks (a bug, never a result). ``smoke`` is the smallest meaningful
``evaluate`` fragment that runs the evaluation: the contract tests run every registered evaluation with it on a
tiny model and check its relations (tests/evaluation/test_evaluation_contract.py).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from core.metrics import parse, split
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
Relations = Callable[[dict[str, float]], dict[str, bool]]


def at_most(a: float, b: float, rtol: float = 0.0) -> bool:
    """a ≤ b up to a relative slack ``rtol`` (float32 rounding) and an absolute 1e-12."""
    return a <= b * (1 + rtol) + 1e-12


def within(metrics: dict[str, float], bounds: dict[str, tuple[float, float]]) -> dict[str, bool]:
    """``lo ≤ value ≤ hi`` for every metric whose catalog kind (the base kind of a two-level name such as
    ``smoothed_clean_acc_sigma0.25@0.5``) has ``(lo, hi)`` in ``bounds`` (a NaN fails)."""
    flags = {}
    for name, value in metrics.items():
        if (bound := bounds.get(parse(name).base)) is not None:
            lo, hi = bound
            flags[f"{lo:g}<={name}<={hi:g}"] = lo <= value <= hi
    return flags


def same_level(name: str, kind: str) -> str:
    """The metric of ``kind`` at ``name``'s level: ``same_level("pgd_l2_acc@0.1", "robust_l2_acc")`` →
    ``"robust_l2_acc@0.1"``."""
    return f"{kind}@{split(name)[1]}"


@dataclass(frozen=True)
class Evaluation:
    """A registered evaluation: ``run(ctx)`` for jobs of ``tasks`` when ``wanted(ctx)``; ``position`` orders it
    among the others (the same order for every job, so seeded draws are reproducible)."""

    name: str
    tasks: tuple[str, ...]
    run: Step
    wanted: Callable[[Context], bool]
    position: int
    sanity: Relations | None = None
    smoke: dict | None = None


_REGISTERED: dict[tuple[str, str], Evaluation] = {}


def _spec_section_set(name: str) -> Callable[[Context], bool]:
    return lambda ctx: getattr(ctx.spec.evaluate, name, None) is not None


def register_evaluation(
    name: str,
    tasks: tuple[str, ...],
    position: int,
    wanted: Callable[[Context], bool] | None = None,
    sanity: Relations | None = None,
    smoke: dict | None = None,
) -> Callable[[Step], Step]:
    """Register ``run(ctx)`` as evaluation ``name`` for ``tasks`` (once per name and task). ``wanted`` defaults to
    "the spec's ``evaluate.<name>`` is set"; ``sanity`` gives the relations its numbers keep; ``smoke`` the
    smallest ``evaluate`` fragment that runs it (default ``{name: {}}``)."""

    def register(run: Step) -> Step:
        for task in tasks:
            if (name, task) in _REGISTERED:
                raise ValueError(f"evaluation {name!r} is registered twice for task {task!r}")
            _REGISTERED[(name, task)] = Evaluation(
                name, tasks, run, wanted or _spec_section_set(name), position, sanity, smoke
            )
        return run

    return register


def registered(task: str) -> list[Evaluation]:
    """The evaluations registered for ``task``, in ``position`` order (importing every evaluation module first)."""
    for module in dict.fromkeys(EVALUATION_MODULES.values()):
        importlib.import_module(module)
    found = [e for (_, t), e in _REGISTERED.items() if t == task]
    return sorted(found, key=lambda e: (e.position, e.name))


def check_relations(task: str, metrics: dict[str, float]) -> dict[str, bool]:
    """Every registered sanity relation of ``task``'s evaluations over ``metrics``: ``{relation: holds}``."""
    flags: dict[str, bool] = {}
    for evaluation in registered(task):
        if evaluation.sanity is not None:
            flags.update(evaluation.sanity(metrics))
    return flags


def seconds_metric(name: str) -> str:
    """The metric timing evaluation ``name``: ``eval_seconds_<name>`` (each is a kind of :mod:`core.metrics`)."""
    return f"eval_seconds_{name}"


def run_evaluations(ctx: Context) -> list[str]:
    """Run every registered evaluation of the data's task that the spec asks for, each timed into the metric
    :func:`seconds_metric` (wall-clock seconds); returns their names."""
    ran = []
    for evaluation in registered(ctx.data.task):
        if evaluation.wanted(ctx):
            start = time.perf_counter()
            ctx.model.eval()  # whatever an earlier step (or a library it called) did to the mode
            evaluation.run(ctx)
            ctx.metrics[seconds_metric(evaluation.name)] = time.perf_counter() - start
            ran.append(evaluation.name)
    return ran


__all__ = ["CLASSIFICATION", "REGRESSION", "Context", "Evaluation", "at_most", "check_relations",
           "register_evaluation", "registered", "run_evaluations", "same_level", "seconds_metric",
           "within"]  # fmt: skip
