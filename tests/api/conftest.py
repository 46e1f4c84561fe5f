"""Fixtures for the API tests on the real PostgreSQL: one migrated database for the session, emptied before each
test (faster than a database per test), and the real app in-process (FastAPI TestClient) with Celery's in-memory
broker (enqueueing works; nothing consumes — workers are tested in tests/e2e, or run in-process with
``worker.executor.execute_job``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import in_process_apps, worker_provenance
from sqlalchemy import text

from core.config import Settings
from core.provenance import current_code
from core.spec import JobSpec
from db import jobs, lifecycle
from db.migrate import upgrade
from db.models import Base
from db.session import session_scope


@pytest.fixture(scope="session")
def api_pg_url(make_pg_database: Callable[[], str]) -> str:
    url = make_pg_database()
    upgrade(url)
    return url


@pytest.fixture
def pg_db(api_pg_url: str) -> str:
    """The session's API database, with every table emptied."""
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with session_scope(api_pg_url) as s:
        s.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    return api_pg_url


@pytest.fixture
def make_pg_settings(pg_db: str, tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": pg_db,
            "broker_url": "memory://",
            "artifacts_dir": tmp_path / "artifacts",
            "broker_timeout": 1.0,
            "auth": "open",
        }
        return Settings(**(values | overrides))

    return make


@pytest.fixture
def pg_settings(make_pg_settings: Callable[..., Settings]) -> Settings:
    return make_pg_settings()


@pytest.fixture
def make_pg_client(make_pg_settings: Callable[..., Settings]) -> Iterator[Callable[..., TestClient]]:
    with in_process_apps() as start:
        yield lambda **overrides: start(make_pg_settings(**overrides))


@pytest.fixture
def pg_client(make_pg_client: Callable[..., TestClient]) -> TestClient:
    return make_pg_client()


@pytest.fixture
def finish(pg_db: str) -> Callable[..., str]:
    """``finish(spec, metrics[, info])``: a succeeded job with ``metrics`` (and ``info``), written as a worker
    would (create → claim → complete); returns its id."""

    def make(spec: dict[str, Any], metrics: dict[str, float], info: dict[str, Any] | None = None) -> str:
        with session_scope(pg_db) as s:
            job = jobs.create_job(s, JobSpec.model_validate(spec), code_version=current_code().identity)
            lifecycle.claim_job(s, job.id, "test-worker", 60)
            assert lifecycle.complete_job(s, job.id, metrics, worker_provenance() | (info or {}), "test-worker")
            return job.id

    return make
