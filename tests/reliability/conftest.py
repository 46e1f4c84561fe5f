"""Fixtures of the fault tests: a fresh PostgreSQL database and an empty Redis db index per test, and a
:class:`~reliability_harness.Services` whose processes are all killed at the end, pass or fail.

The Redis db index is our own for the whole session: the first of ``ROBUSTLAB_TEST_RELIABILITY_REDIS_DBS``
(default ``12,13,14,15``; the shared e2e stack uses 11) on which a lock key can be set with ``NX``. Other
sessions share this Redis, so the tests only ever ``FLUSHDB`` that index (never ``FLUSHALL``) and put the lock
back after each flush.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from reliability_harness import Services
from service_helpers import Broker, claim_redis_index

from db.migrate import upgrade

REDIS_URL = os.environ.get("ROBUSTLAB_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")  # as tests/conftest.py


def service_unavailable(reason: str) -> None:
    """Skip without the service; in CI (``CI`` set) fail (as tests/conftest.py)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the service tests)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def reliability_broker() -> Iterator[Broker]:
    candidates = os.environ.get("ROBUSTLAB_TEST_RELIABILITY_REDIS_DBS", "12,13,14,15").split(",")
    broker = claim_redis_index(REDIS_URL.rsplit("/", 1)[0], candidates, service_unavailable)
    yield broker
    broker.release()


@pytest.fixture
def services(
    make_pg_database: Callable[[], str], reliability_broker: Broker, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Services]]:
    """``services(**env)``: a :class:`Services` on a fresh, migrated PostgreSQL database and the flushed broker
    index, with ``ROBUSTLAB_*`` overrides in ``env``. Nothing is started yet; everything is killed at the end."""
    created: list[Services] = []
    request.node.reliability_stacks = created  # read by pytest_runtest_makereport below

    def make(**env: str) -> Services:
        database_url = make_pg_database()
        upgrade(database_url)
        reliability_broker.flush()
        stack = Services.create(tmp_path / f"stack{len(created)}", database_url, reliability_broker.url, **env)
        created.append(stack)
        return stack

    yield make
    for stack in created:
        stack.stop()
    reliability_broker.flush()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the logs of every process of a failing test (the factory fixture hides them from the root hook)."""
    report = yield
    if report.when == "call" and report.failed:
        for stack in getattr(item, "reliability_stacks", []):
            report.sections.append(("service logs", stack.tail(150)))
    return report
