"""Contract tests over the evaluation registry: every registered evaluation, run with its own ``smoke`` fragment
on a tiny trained model of its task, runs, and its sanity relations speak (at least one relation over its numbers)
and hold; and every relation fails on numbers that break it. A newly registered evaluation is covered here without
new test code."""

from __future__ import annotations

import math

import pytest

from core.spec import JobSpec
from evaluation.registry import Evaluation, registered
from evaluation.runner import run_job

TINY_MODEL = {"family": "explicit", "width": 8, "depth": 2, "h": 0.5}
TRAIN = {"epochs": 2, "lr": 0.02, "seed": 0}
# the smallest dataset of each task (lotka_volterra: the one with trajectories, which the rollout evaluation needs)
DATASETS = {
    "spirals": {"name": "spirals", "n_train": 40, "n_test": 24},
    "sine": {"name": "sine", "n_train": 20, "n_test": 12},
    "lotka_volterra": {"name": "lotka_volterra", "n_train": 20, "n_test": 10},
    "digits_denoising": {"name": "digits_denoising", "n_train": 40, "n_test": 8, "noise": 0.1},
}
MODELS = {"digits_denoising": {"family": "lipschitz", "width": 64, "depth": 2}}  # the plug-and-play denoiser
TASKS = {"spirals": "classification", "sine": "regression", "lotka_volterra": "regression",
         "digits_denoising": "denoising"}  # fmt: skip


def smoke_evaluate(task: str) -> dict:
    """The ``evaluate`` section asking for every registered evaluation of ``task``, each at its smoke size."""
    section: dict = {"gaussian": None}  # the one section with a default: asked for only through its smoke
    for evaluation in registered(task):
        section.update(evaluation.smoke if evaluation.smoke is not None else {evaluation.name: {}})
    return section


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple[dict, dict]]:
    """Per dataset: the metrics and info of one tiny job that asks for every evaluation of its task."""
    out = {}
    for name, dataset in DATASETS.items():
        spec = {"name": f"contract-{name}", "dataset": dataset, "model": MODELS.get(name, TINY_MODEL),
                "train": TRAIN, "evaluate": smoke_evaluate(TASKS[name])}  # fmt: skip
        result = run_job(JobSpec.model_validate(spec))
        out[name] = (result.metrics, result.info)
    return out


def all_registered() -> list[tuple[str, Evaluation]]:
    tasks = sorted(set(TASKS.values()))
    return [(task, e) for task in tasks for e in registered(task)]


@pytest.mark.parametrize("task,evaluation", all_registered(), ids=lambda v: v if isinstance(v, str) else v.name)
def test_every_registered_evaluation_runs_and_keeps_its_relations(runs, task, evaluation) -> None:
    datasets = [name for name, t in TASKS.items() if t == task]
    ran_on = [name for name in datasets if evaluation.name in runs[name][1]["evaluations"]]
    assert ran_on, f"evaluation {evaluation.name!r} ran on none of the tiny {task} jobs {datasets}"
    if evaluation.sanity is None:
        return
    for name in ran_on:
        metrics, info = runs[name]
        flags = evaluation.sanity(metrics)
        assert flags, f"{evaluation.name}'s relations say nothing about the numbers it produced on {name}"
        assert all(flags.values()), flags
        assert set(flags) <= set(info["sanity"])  # the runner checked them too
        broken = evaluation.sanity(dict.fromkeys(metrics, math.nan))
        assert set(broken) == set(flags) and not any(broken.values()), "a relation that cannot fail"


def test_the_runner_refuses_numbers_that_break_a_relation(runs) -> None:
    from evaluation.runner import SanityCheckFailed, check_sanity

    metrics = dict(runs["spirals"][0])
    certified = next(name for name in metrics if name.startswith("certified_l2_acc@"))
    metrics[certified] = metrics["clean_acc"] + 0.1
    with pytest.raises(SanityCheckFailed, match=f"{certified}<=clean_acc"):
        check_sanity(metrics)
