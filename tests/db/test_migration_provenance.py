"""Migration 0004 on both backends: jobs stored before it become stale (no protocol recorded) and stay re-evaluable
when the worker kept their weights; the downgrade drops the new columns again."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import inspect, text

from db.migrate import downgrade, upgrade
from db.session import get_engine

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.services)]


@pytest.fixture(params=BACKENDS)
def fresh_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    return request.getfixturevalue("make_pg_database")()


def _insert_job(connection, status: str, info: dict | None) -> str:
    job_id = str(uuid.uuid4())
    connection.execute(
        text(
            "INSERT INTO jobs (id, name, dataset, family, task, spec, spec_hash, status, attempts, created_at, info,"
            " code_version) VALUES (:id, 'old', 'spirals', 'explicit', 'classification', :spec, :hash, :status, 1,"
            " CURRENT_TIMESTAMP, :info, 'before')"
        ),
        {"id": job_id, "spec": "{}", "hash": "0" * 64, "status": status, "info": json.dumps(info) if info else None},
    )
    return job_id


def test_0004_marks_old_jobs_stale_and_keeps_their_weights(fresh_url: str) -> None:
    upgrade(fresh_url, "0003")
    engine = get_engine(fresh_url)
    with engine.begin() as connection:
        ran = _insert_job(connection, "succeeded", {"artifacts_dir": "/data/artifacts/x", "spec_hash": "0" * 64})
        seeded = _insert_job(connection, "succeeded", {"seeded": True})
        failed = _insert_job(connection, "failed", {"artifacts_dir": "/data/artifacts/y"})
    upgrade(fresh_url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, weights_kept, protocol_version, code_version FROM jobs")).all()
    found = {row.id: row for row in rows}
    assert bool(found[ran].weights_kept) is True
    assert bool(found[seeded].weights_kept) is False and bool(found[failed].weights_kept) is False
    assert all(row.protocol_version is None and row.code_version == "before" for row in rows)

    downgrade(fresh_url, "0003")
    engine.dispose()
    columns = {c["name"] for c in inspect(engine).get_columns("jobs")}
    assert not {"protocol_version", "reevaluation_of", "weights_kept"} & columns and "code_version" in columns
    engine.dispose()
