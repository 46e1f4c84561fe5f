"""The queries behind the new API features, on SQLite and PostgreSQL: keyset pages of the leaderboard (row-value
comparison on both backends), idempotent submission, re-use of a succeeded job, retry, and artifact references."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from service_helpers import tiny_spec
from sqlalchemy import text

from core.spec import JobSpec
from db import artifacts, jobs, lifecycle
from db.leaderboard import leaderboard
from db.migrate import upgrade
from db.models import Base
from db.seed import seed_leaderboard
from db.session import session_scope

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.services)]


@pytest.fixture(scope="module")
def pg_module_url(make_pg_database) -> str:
    url = make_pg_database()
    upgrade(url)
    return url


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path) -> str:
    """A migrated, empty database: a new SQLite file, or this module's PostgreSQL database emptied."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'q.db'}"
        upgrade(url)
        return url
    url = request.getfixturevalue("pg_module_url")
    with session_scope(url) as s:
        s.execute(text(f"TRUNCATE {', '.join(t.name for t in Base.metadata.sorted_tables)} CASCADE"))
    return url


@pytest.fixture
def session(db_url: str) -> Iterator:
    with session_scope(db_url) as s:
        yield s


def spec(**overrides) -> JobSpec:
    return JobSpec.model_validate(tiny_spec(**overrides))


@pytest.mark.parametrize("descending", [True, False])
def test_keyset_pages_cover_every_row_once(db_url: str, descending: bool) -> None:
    seeded = seed_leaderboard(db_url, 60, seed=3, quantum=0.05)  # few distinct values: many ties
    want = sorted(((j.metrics["clean_acc"], j.id) for j in seeded), reverse=descending)
    got, after, rank = [], None, 1
    with session_scope(db_url) as s:
        while True:
            page = leaderboard(s, metric="clean_acc", limit=7, descending=descending, after=after, first_rank=rank)
            got += page
            if len(page) < 7:
                break
            after, rank = (page[-1].value, page[-1].job_id), page[-1].rank + 1
    assert [(r.value, r.job_id) for r in got] == want
    assert [r.rank for r in got] == list(range(1, 61))
    assert got[0].hyper_parameters["depth"] == 4 and got[0].finished_at is not None


def test_submit_job_idempotency_and_reuse(session) -> None:
    first, reused = jobs.submit_job(session, spec(name="a"), idempotency_key="k", code_version="1")
    assert reused is None
    again, reused = jobs.submit_job(session, spec(name="a"), idempotency_key="k", code_version="1")
    assert again.id == first.id and reused == "idempotency-key"
    other_owner, reused = jobs.submit_job(session, spec(name="a"), idempotency_key="k", owner="bob", code_version="1")
    assert other_owner.id != first.id and reused is None
    with pytest.raises(jobs.IdempotencyConflict):
        jobs.submit_job(session, spec(name="b"), idempotency_key="k", code_version="1")

    lifecycle.claim_job(session, first.id, "w", 60)
    lifecycle.complete_job(session, first.id, {"clean_acc": 0.5}, {"versions": {"robustlab": "1"}}, "w")
    same, reused = jobs.submit_job(session, spec(name="a"), code_version="1")
    assert same.id == first.id and reused == "succeeded-job"
    new, reused = jobs.submit_job(session, spec(name="a"), code_version="2")  # other code: run again
    assert new.id != first.id and reused is None
    forced, reused = jobs.submit_job(session, spec(name="a"), code_version="1", reuse_succeeded=False)
    assert forced.id not in (first.id, new.id) and reused is None
    assert jobs.get_job(session, first.id).code_version == "1"


def test_retry_only_failed_or_cancelled(session) -> None:
    job = jobs.create_job(session, spec())
    assert lifecycle.retry_job(session, job.id) is None  # queued
    lifecycle.claim_job(session, job.id, "w", 60)
    assert lifecycle.retry_job(session, job.id) is None  # running
    lifecycle.fail_job(session, job.id, "Boom: x", "w")
    retried = lifecycle.retry_job(session, job.id)
    assert (retried.status, retried.attempts, retried.error, retried.worker) == ("queued", 0, None, None)
    assert lifecycle.cancel_job(session, job.id).status == "cancelled"
    assert lifecycle.retry_job(session, job.id).status == "queued"
    assert lifecycle.retry_job(session, "nope") is None


def test_resolve_spec_maps_references_to_files(tmp_path: Path) -> None:
    artifact_id = artifacts.new_id()
    with pytest.raises(artifacts.ArtifactNotFound):
        artifacts.resolve_spec(spec(checkpoint=f"artifact:{artifact_id}"), tmp_path)
    path = artifacts.artifact_path(tmp_path, "checkpoint", artifact_id)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    resolved = artifacts.resolve_spec(spec(checkpoint=f"artifact:{artifact_id}"), tmp_path)
    assert resolved.checkpoint == str(path.resolve())
    local = spec(checkpoint="runs/x")
    assert artifacts.resolve_spec(local, tmp_path) is local  # paths are left alone
    with pytest.raises(artifacts.ArtifactNotFound):
        artifacts.artifact_path(tmp_path, "dataset", "../../etc/passwd")
