"""The evaluation registry: a job runs exactly the registered evaluations its spec asks for, in a fixed order, and
a newly registered evaluation runs in a real job without touching the runner."""

from __future__ import annotations

import pytest
from service_helpers import tiny_spec

from core import metrics
from core.spec import JobSpec
from evaluation import registry
from evaluation.registry import CLASSIFICATION, Context, register_evaluation, registered, seconds_metric
from evaluation.runner import run_job


def test_each_task_has_its_evaluations_in_a_fixed_order() -> None:
    names = [e.name for e in registered("classification")]
    assert names == ["gaussian", "attacks", "certified", "smoothing"]
    assert [e.name for e in registered("regression")] == ["rollout", "gaussian", "pgd", "certified"]
    assert [e.name for e in registered("denoising")] == ["gaussian", "pgd", "certified", "plug_and_play"]


def test_an_evaluation_registers_once_per_task() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register_evaluation("gaussian", CLASSIFICATION, position=10)(lambda ctx: None)


def test_a_job_runs_only_what_its_spec_asks_for_and_a_new_evaluation_without_runner_changes(monkeypatch) -> None:
    steps: list[str] = []
    spec = tiny_spec("registry", train={"epochs": 2, "lr": 0.02})
    spec["evaluate"] = {"gaussian": {"sigmas": [0.0, 0.1], "repeats": 2}}
    monkeypatch.setattr(registry, "_REGISTERED", dict(registry._REGISTERED))  # the new one is gone after the test

    @register_evaluation("margin_mean", CLASSIFICATION, position=99, wanted=lambda ctx: True)
    def margin_mean(ctx: Context) -> None:
        ctx.step("margin_mean")
        top2 = ctx.clean_logits.topk(2, dim=1).values
        ctx.metrics["margin_mean"] = float((top2[:, 0] - top2[:, 1]).mean())

    result = run_job(JobSpec.model_validate(spec), progress=lambda e: steps.append(e.get("step", "")))
    assert [s for s in steps if s] == ["gaussian", "margin_mean"]  # no attack, no certificate: not asked for
    assert result.metrics["margin_mean"] > 0 and "gaussian_acc@0.1" in result.metrics
    assert not any(name.startswith(("pgd_", "certified_", "robust_")) for name in result.metrics)
    # each evaluation that ran is timed, within the whole evaluation's time
    timed = {name: result.metrics[seconds_metric(name)] for name in result.info["evaluations"]}
    assert set(timed) == {"gaussian", "margin_mean"} and all(t > 0 for t in timed.values())
    assert sum(timed.values()) <= result.metrics["eval_seconds"]
    assert {n for n in result.metrics if n.startswith("eval_seconds_")} == {seconds_metric(n) for n in timed}


def test_every_registered_evaluation_is_timed_by_a_metric_of_the_catalog() -> None:
    """Registering an evaluation adds ``eval_seconds_<name>`` to its jobs' metrics: its kind must be described."""
    for task in metrics.EVERY_TASK:
        for evaluation in registered(task):
            kind = metrics.kind_info(seconds_metric(evaluation.name))
            assert kind is not None, f"core/metrics.py has no kind {seconds_metric(evaluation.name)}"
            assert task in kind.tasks and kind.unit == "seconds" and kind.better == "lower"
            assert metrics.is_timing(kind.name)
