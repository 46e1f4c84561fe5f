"""Repository functions on SQLite and PostgreSQL: atomic claims and leases, all-or-nothing completion, unique
results, leaderboard, and migrations that match the models."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from service_helpers import tiny_spec
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from core.families import hyper_parameters
from core.spec import JobSpec
from db import jobs, lifecycle, recovery
from db.leaderboard import leaderboard
from db.migrate import downgrade, upgrade
from db.models import Base, Job, Result, utcnow
from db.session import get_engine, session_scope

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.services)]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def fresh_url(backend: str, tmp_path, request) -> str:
    """An empty database (no tables) of the backend under test."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    return request.getfixturevalue("make_pg_database")()


@pytest.fixture
def db_url(fresh_url: str) -> str:
    upgrade(fresh_url)
    return fresh_url


@pytest.fixture
def session(db_url: str) -> Iterator:
    with session_scope(db_url) as s:
        yield s


def new_job(session, **overrides) -> Job:
    return jobs.create_job(session, JobSpec.model_validate(tiny_spec(**overrides)))


def count_results(url: str, job_id: str) -> int:
    with session_scope(url) as s:
        return s.scalar(select(func.count()).select_from(Result).where(Result.job_id == job_id))


# ---------------------------------------------------------------------------------------------------- claims
def test_create_job_denormalises_the_spec(session) -> None:
    job = new_job(session, name="denorm")
    assert (job.status, job.name, job.dataset, job.family, job.task) == (
        "queued", "denorm", "spirals", "explicit", "classification"
    )  # fmt: skip
    assert job.spec["model"]["width"] == 8 and len(job.spec_hash) == 64 and job.attempts == 0
    assert job.created_at.tzinfo is not None


def test_second_claim_with_live_lease_is_dropped(session) -> None:
    job = new_job(session)
    claimed = lifecycle.claim_job(session, job.id, "worker-a", lease_seconds=60)
    assert claimed is not None and claimed.status == "running" and claimed.worker == "worker-a"
    assert claimed.attempts == 1 and claimed.lease_expires_at > claimed.started_at
    assert lifecycle.claim_job(session, job.id, "worker-b", lease_seconds=60) is None
    assert lifecycle.claim_job(session, job.id, "worker-a", lease_seconds=60) is None  # a redelivery to the same worker
    assert jobs.get_job(session, job.id).worker == "worker-a"


def test_expired_lease_is_taken_over(session) -> None:
    job = new_job(session)
    assert lifecycle.claim_job(session, job.id, "worker-a", lease_seconds=0.05)
    time.sleep(0.15)
    taken = lifecycle.claim_job(session, job.id, "worker-b", lease_seconds=60)
    assert taken is not None and taken.worker == "worker-b" and taken.attempts == 2
    # the old worker learns it lost the job, and can no longer write its outcome
    assert not lifecycle.renew_lease(session, job.id, "worker-a", 60)
    assert not lifecycle.update_progress(session, job.id, {"phase": "train"}, "worker-a")
    assert lifecycle.complete_job(session, job.id, {"clean_acc": 0.1}, {}, worker="worker-a") is None
    assert lifecycle.fail_job(session, job.id, "late", worker="worker-a") is None
    assert lifecycle.renew_lease(session, job.id, "worker-b", 60)


def test_concurrent_claims_have_one_winner(db_url: str) -> None:
    with session_scope(db_url) as s:
        job_id = new_job(s).id
    winners: list[str] = []
    barrier = threading.Barrier(8)

    def claim(i: int) -> None:
        barrier.wait()
        with session_scope(db_url) as s:
            if lifecycle.claim_job(s, job_id, f"worker-{i}", lease_seconds=60) is not None:
                winners.append(f"worker-{i}")

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    with session_scope(db_url) as s:
        job = jobs.get_job(s, job_id)
        assert job.worker == winners[0] and job.attempts == 1


def test_cancelled_job_cannot_be_claimed_and_stops_its_worker(session) -> None:
    queued, running = new_job(session), new_job(session)
    lifecycle.claim_job(session, running.id, "w", 60)
    assert lifecycle.cancel_job(session, queued.id).status == "cancelled"
    assert lifecycle.cancel_job(session, running.id).status == "cancelled"
    assert lifecycle.claim_job(session, queued.id, "w", 60) is None
    assert not lifecycle.renew_lease(session, running.id, "w", 60)
    assert lifecycle.cancel_job(session, running.id) is None  # already finished


# ---------------------------------------------------------------------------------------------------- outcomes
def test_complete_job_twice_does_not_duplicate_results(session, db_url: str) -> None:
    job = new_job(session)
    lifecycle.claim_job(session, job.id, "w", 60)
    metrics = {"clean_acc": 0.9, "pgd_linf_acc@0.05": 0.5, "lipschitz_bound": float("inf")}
    done = lifecycle.complete_job(session, job.id, metrics, {"spec_hash": job.spec_hash, "loss": float("nan")}, "w")
    assert done is not None and done.status == "succeeded" and done.finished_at is not None
    assert done.info["nonfinite_metrics"] == {"lipschitz_bound": "inf"} and done.info["loss"] == "nan"
    assert lifecycle.complete_job(session, job.id, metrics, {}, "w") is None
    assert lifecycle.complete_job(session, job.id, {"clean_acc": 0.1}) is None
    assert jobs.get_metrics(session, job.id) == {"clean_acc": 0.9, "pgd_linf_acc@0.05": 0.5}
    assert count_results(db_url, job.id) == 2


def test_results_are_unique_per_job_and_name(db_url: str) -> None:
    with session_scope(db_url) as s:
        job = new_job(s)
        s.add(Result(job_id=job.id, name="clean_acc", value=0.5))
    with pytest.raises(IntegrityError), session_scope(db_url) as s:
        s.add(Result(job_id=job.id, name="clean_acc", value=0.6))
    assert count_results(db_url, job.id) == 1


@pytest.mark.services
def test_complete_job_is_all_or_nothing(make_pg_database: Callable[[], str]) -> None:
    """PostgreSQL rejects a NUL byte in text: the insert of the results fails after the status update, and the
    whole transaction is rolled back (the job stays running with no results)."""
    url = make_pg_database()
    upgrade(url)
    with session_scope(url) as s:
        job = new_job(s)
        lifecycle.claim_job(s, job.id, "w", 60)
    with pytest.raises(DBAPIError), session_scope(url) as s:
        lifecycle.complete_job(s, job.id, {"clean_acc": 0.9, "bad\x00name": 1.0}, {"x": 1}, "w")
    with session_scope(url) as s:
        job = jobs.get_job(s, job.id)
        assert job.status == "running" and job.info is None and job.finished_at is None
    assert count_results(url, job.id) == 0


def test_fail_job_keeps_the_error_and_no_results(session, db_url: str) -> None:
    job = new_job(session)
    lifecycle.claim_job(session, job.id, "w", 60)
    assert lifecycle.update_progress(session, job.id, {"phase": "train", "epoch": 4, "loss": float("nan")}, "w")
    failed = lifecycle.fail_job(session, job.id, "TrainingDiverged: training diverged: loss is nan at epoch 4", "w")
    assert failed.status == "failed" and "diverged" in failed.error and failed.progress["loss"] == "nan"
    assert lifecycle.complete_job(session, job.id, {"clean_acc": 1.0}) is None
    assert count_results(db_url, job.id) == 0


def test_recover_orphans(session) -> None:
    fresh, exhausted, alive = new_job(session), new_job(session), new_job(session)
    lifecycle.claim_job(session, fresh.id, "w", 0.01)
    for _ in range(3):
        lifecycle.claim_job(session, exhausted.id, "w", 0.01)
        time.sleep(0.03)
    lifecycle.claim_job(session, alive.id, "w", 60)
    time.sleep(0.05)
    requeued, failed = recovery.recover_orphans(session, max_attempts=3)
    assert [j.id for j in requeued] == [fresh.id] and requeued[0].status == "queued"
    assert [j.id for j in failed] == [exhausted.id] and "WorkerLost" in failed[0].error
    assert jobs.get_job(session, alive.id).status == "running"
    # the requeued job, and only it, is due to be sent to the broker again at the next sweep
    assert [j.id for j in recovery.claim_redispatch(session, 60, 600)] == [fresh.id]


def test_claim_redispatch_backs_off_with_the_age_of_the_job(session) -> None:
    """A job that waits an hour in a long queue, swept every 10 s: re-sent at ages 60, 120, 240, 480 s, then every
    600 s — nine duplicate messages, not one per sweep (360)."""
    job = new_job(session)
    sends = [
        t
        for t in range(0, 3600, 10)
        if recovery.claim_redispatch(session, 60, 600, now=job.created_at + timedelta(seconds=t))
    ]
    assert sends == [60, 120, 240, 480, 960, 1560, 2160, 2760, 3360]


def test_claim_redispatch_at_start_up_and_after_a_lost_worker(session) -> None:
    queued, running, orphan = new_job(session), new_job(session), new_job(session)
    lifecycle.claim_job(session, running.id, "w", 60)
    lifecycle.claim_job(session, orphan.id, "w", 0.01)
    assert recovery.claim_redispatch(session, 60, 600) == []  # nothing is 60 s old yet
    # start-up: every queued job, once
    assert [j.id for j in recovery.claim_redispatch(session, 60, 600, everything=True)] == [queued.id]
    time.sleep(0.05)
    requeued, _ = recovery.recover_orphans(session, max_attempts=3)
    assert [j.id for j in requeued] == [orphan.id]
    assert [j.id for j in recovery.claim_redispatch(session, 60, 600)] == [orphan.id]  # due at once
    assert recovery.claim_redispatch(session, 60, 600) == []  # … and then backs off
    recovery.release_redispatch(session, [orphan.id, running.id])  # the broker refused it: due at the next sweep
    assert [j.id for j in recovery.claim_redispatch(session, 60, 600)] == [orphan.id]  # a running job is never sent


def test_concurrent_sweepers_re_send_each_job_once(db_url: str) -> None:
    with session_scope(db_url) as s:
        ids = {new_job(s).id for _ in range(5)}
    later = utcnow() + timedelta(hours=1)  # every job is due
    taken: list[str] = []
    barrier = threading.Barrier(4)

    def sweep() -> None:
        barrier.wait()
        with session_scope(db_url) as s:
            taken.extend(j.id for j in recovery.claim_redispatch(s, 60, 600, now=later))

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted(ids)


def test_list_jobs_filters_and_pages(session) -> None:
    a, b, c = new_job(session), new_job(session), new_job(session)
    lifecycle.claim_job(session, b.id, "w", 60)
    queued, total = jobs.list_jobs(session, status="queued")
    assert total == 2 and {j.id for j in queued} == {a.id, c.id}
    page, total = jobs.list_jobs(session, limit=2, offset=0)
    rest, _ = jobs.list_jobs(session, limit=2, offset=2)
    assert total == 3 and len(page) == 2 and len(rest) == 1


# ---------------------------------------------------------------------------------------------------- leaderboard
def _finished(session, metrics: dict[str, float], **spec) -> Job:
    job = new_job(session, **spec)
    lifecycle.claim_job(session, job.id, "w", 60)
    lifecycle.complete_job(session, job.id, metrics, {})
    return job


def test_leaderboard_ranks_filters_and_reports_hyper_parameters(session) -> None:
    implicit = {"family": "implicit", "width": 16, "depth": 6, "h": 0.5, "theta": 0.75}
    a = _finished(session, {"clean_acc": 0.8, "pgd_linf_acc@0.1": 0.6}, name="a")
    b = _finished(session, {"clean_acc": 0.9, "pgd_linf_acc@0.1": 0.3}, name="b", model=implicit)
    c = _finished(session, {"clean_acc": 0.95}, name="c", dataset={"name": "digits", "n_train": 100})
    new_job(session, name="queued-one")  # not finished: never on the board

    rows = leaderboard(session)
    assert [r.job_id for r in rows] == [c.id, b.id, a.id] and [r.rank for r in rows] == [1, 2, 3]
    rows = leaderboard(session, dataset="spirals", metric="pgd_linf_acc@0.1")
    assert [(r.name, r.value, r.clean_acc) for r in rows] == [("a", 0.6, 0.8), ("b", 0.3, 0.9)]
    assert rows[1].metrics == {"clean_acc": 0.9, "pgd_linf_acc@0.1": 0.3}
    assert (rows[1].family, rows[1].width, rows[1].depth, rows[1].theta, rows[1].h) == ("implicit", 16, 6, 0.75, 0.5)
    assert rows[0].theta == 0.0  # explicit ResNet = θ-method with θ = 0
    assert [r.name for r in leaderboard(session, family="implicit")] == ["b"]
    assert [r.name for r in leaderboard(session, descending=False, limit=2)] == ["a", "b"]
    assert leaderboard(session, metric="no_such_metric") == []


# ---------------------------------------------------------------------------------------------------- migrations
def test_migrations_create_exactly_the_models_tables(fresh_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    upgrade(fresh_url)
    engine = get_engine(fresh_url)
    tables = set(inspect(engine).get_table_names()) - {"alembic_version"}
    assert tables == set(Base.metadata.tables)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata)
    assert diff == []

    downgrade(fresh_url, "base")
    engine.dispose()
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(fresh_url)
    engine.dispose()
    assert set(inspect(engine).get_table_names()) - {"alembic_version"} == set(Base.metadata.tables)


def test_hyper_parameters_of_an_ode_spec_show_its_time_horizon_solver_and_regularizers() -> None:
    spec = {
        "model": {"family": "ode", "depth": 10, "t_final": 5.0, "h": 0.1, "hidden": 32, "theta": 0.5,
                  "solver": {"forward": "anderson", "backward": "gmres"}},
        "train": {"epochs": 3, "regularizers": {"stochastic": None, "divergence": {"weight": 0.01}, "normal": None}},
    }  # fmt: skip
    hp = hyper_parameters(spec)
    assert hp["t_final"] == 5.0 and hp["h"] == 0.5  # h = t_final / depth, not the spec's unused default
    assert hp["solver"] == "anderson/gmres" and hp["regularizers"] == ["divergence"]
    assert "t_final" not in hyper_parameters({"model": {"family": "explicit", "h": 0.1}, "train": {}})
