"""``worker.executor.execute_job`` in-process on SQLite (no broker): the claim/heartbeat/complete/fail logic."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from service_helpers import diverging_spec, tiny_spec
from sqlalchemy.exc import OperationalError

from core.config import Settings
from core.spec import JobSpec
from db import jobs, lifecycle
from db.session import session_scope
from worker.executor import ProgressReporter, execute_job, load_spec


@pytest.fixture
def settings(sqlite_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=sqlite_url, artifacts_dir=tmp_path / "artifacts", torch_threads=1, progress_interval=0.05,
        lease_seconds=5,
    )  # fmt: skip


def submit(settings: Settings, spec: dict) -> str:
    with session_scope(settings.database_url) as s:
        return jobs.create_job(s, JobSpec.model_validate(spec)).id


def test_succeeds_once_then_drops_redeliveries(settings: Settings) -> None:
    job_id = submit(settings, tiny_spec("exec-ok"))
    assert execute_job(job_id, "w1", settings) == "succeeded"
    assert execute_job(job_id, "w2", settings) == "dropped"
    with session_scope(settings.database_url) as s:
        job, metrics = jobs.get_job(s, job_id), jobs.get_metrics(s, job_id)
    assert job.status == "succeeded" and job.attempts == 1 and job.progress["phase"] == "done"
    assert job.info["artifacts_dir"] == str(settings.artifacts_dir / job_id) and "clean_acc" in metrics
    assert (settings.artifacts_dir / job_id / "result.json").exists()


def test_diverging_job_fails_with_the_error_text(settings: Settings) -> None:
    job_id = submit(settings, diverging_spec())
    assert execute_job(job_id, "w1", settings) == "failed"
    with session_scope(settings.database_url) as s:
        job = jobs.get_job(s, job_id)
        assert job.status == "failed" and job.error.startswith("TrainingDiverged: training diverged")
        assert jobs.get_metrics(s, job_id) == {}


def test_a_job_whose_image_files_are_missing_offline_fails_at_once_naming_them(
    settings: Settings, image_files, tmp_path: Path, monkeypatch
) -> None:
    from image_files import use_files

    from core.config import get_settings

    use_files(monkeypatch, tmp_path / "no-data", image_files.checksums)  # empty, sources unreachable
    job_id = submit(settings, tiny_spec("exec-mnist", dataset={"name": "mnist", "n_train": 8, "n_test": 4}))
    start = time.perf_counter()
    assert execute_job(job_id, "w1", settings) == "failed"
    assert time.perf_counter() - start < 5.0
    with session_scope(settings.database_url) as s:
        error = jobs.get_job(s, job_id).error
    folder = tmp_path / "no-data" / "mnist"
    assert error.startswith(f"DatasetFileError: dataset 'mnist': train-images-idx3-ubyte.gz is not in {folder}")
    assert f"put the published files in {folder}" in error and "t10k-labels-idx1-ubyte.gz" in error
    monkeypatch.undo()
    get_settings.cache_clear()


def test_cancel_stops_a_running_job(settings: Settings) -> None:
    job_id = submit(settings, tiny_spec("exec-cancel", train={"epochs": 20_000, "lr": 0.01}))
    outcome: list[str] = []
    runner = threading.Thread(target=lambda: outcome.append(execute_job(job_id, "w1", settings)))
    runner.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with session_scope(settings.database_url) as s:
            progress = jobs.get_job(s, job_id).progress or {}
        if progress.get("phase") == "train":
            break
        time.sleep(0.05)
    with session_scope(settings.database_url) as s:
        assert lifecycle.cancel_job(s, job_id) is not None
    runner.join(timeout=30)
    assert outcome == ["cancelled"]
    with session_scope(settings.database_url) as s:
        assert jobs.get_job(s, job_id).status == "cancelled" and jobs.get_metrics(s, job_id) == {}


def _unreachable(*_args, **_kwargs):
    raise OperationalError("UPDATE jobs …", {}, Exception("server closed the connection unexpectedly"))


def test_database_errors_are_retried_not_stored_as_the_jobs_error(settings: Settings, monkeypatch) -> None:
    """The claim and the results meet an unreachable database (twice each): retried, then the job succeeds on its
    first attempt."""
    job_id = submit(settings, tiny_spec("exec-db-retry"))
    calls: dict[str, int] = {"claim_job": 0, "complete_job": 0}
    for name in calls:
        real = getattr(lifecycle, name)

        def flaky(*args, _name=name, _real=real, **kwargs):
            calls[_name] += 1
            return _unreachable() if calls[_name] <= 2 else _real(*args, **kwargs)

        monkeypatch.setattr(lifecycle, name, flaky)
    assert execute_job(job_id, "w1", settings) == "succeeded"
    assert calls == {"claim_job": 3, "complete_job": 3}
    with session_scope(settings.database_url) as s:
        job = jobs.get_job(s, job_id)
        assert job.status == "succeeded" and job.attempts == 1 and job.error is None
        assert "clean_acc" in jobs.get_metrics(s, job_id)


def test_a_long_outage_leaves_the_job_running_for_the_sweep(settings: Settings, monkeypatch) -> None:
    """Past ``db_retry_seconds`` the error propagates (the Celery task retries); the job is not marked failed, and
    the recovery sweep re-runs it once its lease expires."""
    settings = settings.model_copy(update={"db_retry_seconds": 0.3})
    job_id = submit(settings, tiny_spec("exec-db-down"))
    monkeypatch.setattr(lifecycle, "complete_job", _unreachable)
    monkeypatch.setattr(lifecycle, "fail_job", _unreachable)
    with pytest.raises(OperationalError):
        execute_job(job_id, "w1", settings)
    with session_scope(settings.database_url) as s:
        job = jobs.get_job(s, job_id)
        assert job.status == "running" and job.error is None and jobs.get_metrics(s, job_id) == {}


def test_stored_spec_round_trips() -> None:
    for spec in (tiny_spec(), tiny_spec(model={"family": "implicit", "theta": 0.75})):
        parsed = JobSpec.model_validate(spec)
        assert load_spec(parsed.model_dump(mode="json")).spec_hash() == parsed.spec_hash()


def test_the_eta_of_a_resumed_training_is_timed_from_its_own_epochs() -> None:
    """A job resumed at epoch 60 of 100 first reports epoch 60 (the checkpoint's): the origin of its timing, so the
    rate is that of the epochs this worker runs, and the ETA counts the 40 it has left, not 100."""
    reporter = ProgressReporter("job", "worker", settings=None, heartbeat=None)  # the ETA needs neither
    clock = {60: 1000.0, 61: 1003.0, 62: 1006.0, 70: 1030.0}
    etas = []
    for epoch, now in clock.items():
        event = {"phase": "train", "epoch": epoch, "epochs": 100, "resumed_from": 60}
        etas.append(reporter._with_eta(event, now))
    assert "eta_seconds" not in etas[0] and etas[0]["resumed_from"] == 60
    assert [e["seconds_per_epoch"] for e in etas[1:]] == pytest.approx([3.0, 3.0, 3.0])
    assert [e["eta_seconds"] for e in etas[1:]] == pytest.approx([3.0 * 39, 3.0 * 38, 3.0 * 30])
    assert reporter._with_eta({"phase": "evaluate", "step": "attacks"}, 2000.0) == {"phase": "evaluate",
                                                                                     "step": "attacks"}  # fmt: skip
