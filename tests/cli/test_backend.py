"""The one job-running backend of ``submit``, ``sweep`` and ``check`` (cli/backend.py): a job ends the same way
in this process and on a real server — the same numbers for the same spec, the same failure for a diverging one —
and an error from one job is that job's run, not the others'."""

from __future__ import annotations

from pathlib import Path

import pytest
from service_helpers import diverging_spec, free_port, tiny_spec

from cli.backend import BackendError, InProcess, JobRun, OnServer
from cli.client import RobustlabClient
from core import metrics


def small(name: str) -> dict:
    return tiny_spec(name, train={"epochs": 5, "lr": 0.02}, evaluate={"gaussian": {"sigmas": [0.1], "repeats": 1}})


def numbers(run: JobRun) -> dict[str, float]:
    """The run's metrics but its timings."""
    return {name: value for name, value in run.metrics.items() if not metrics.is_timing(name)}


def test_in_process_a_failed_job_is_its_run_and_on_done_can_stop_the_rest(tmp_path: Path) -> None:
    specs = [diverging_spec("backend-diverges"), small("backend-ok")]
    runs = InProcess(torch_threads=1).run(specs, [tmp_path / "a", tmp_path / "b"])
    assert [r.status for r in runs] == ["failed", "succeeded"]
    assert "TrainingDiverged" in (runs[0].error or "") and runs[0].metrics == {}
    assert 0.0 <= runs[1].metrics["clean_acc"] <= 1.0 and runs[1].info["outcomes"]
    assert runs[1].out_dir == str(tmp_path / "b") and (tmp_path / "b" / "result.json").exists()

    seen: list[str] = []

    def stop(_i: int, run: JobRun) -> None:
        seen.append(run.name)
        if not run.ok:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        InProcess(torch_threads=1).run(specs, on_done=stop)
    assert seen == ["backend-diverges"]  # the second job never ran


def test_a_missing_local_checkpoint_and_an_unreachable_server_are_backend_errors(tmp_path: Path) -> None:
    spec = {**small("backend-ckpt"), "checkpoint": str(tmp_path / "nowhere")}
    with pytest.raises(BackendError, match="checkpoint not found"):
        InProcess().with_checkpoints([spec])
    with RobustlabClient(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(BackendError, match="cannot reach the robustlab server") as caught:
            OnServer(client).run([small("backend-nowhere")])
    assert caught.value.name == "backend-nowhere"


@pytest.mark.services
@pytest.mark.e2e
def test_on_a_server_jobs_end_as_they_do_in_process(pg_stack, tmp_path: Path) -> None:
    specs = [small("backend-same"), diverging_spec("backend-same-diverges")]
    here = InProcess(torch_threads=1).run(specs)
    submitted: list[str] = []
    with RobustlabClient(pg_stack.base_url) as client:
        backend = OnServer(client, poll=0.2, timeout=300, on_submitted=lambda i, s, job: submitted.append(job["id"]))
        there = backend.run(specs)
    assert [r.status for r in there] == [r.status for r in here] == ["succeeded", "failed"]
    assert [r.job_id for r in there] == submitted and all(r.job_id is None for r in here)
    assert numbers(there[0]) == numbers(here[0])  # seeded: the same numbers wherever the job runs
    assert there[0].info["outcomes"] == here[0].info["outcomes"] and there[0].spec["name"] == "backend-same"
    assert "TrainingDiverged" in (there[1].error or "") and "TrainingDiverged" in (here[1].error or "")
