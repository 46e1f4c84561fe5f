"""Fixtures of the fault tests: a fresh PostgreSQL database and an empty Redis db index per test, and a
:class:`~reliability_harness.Services` whose processes are all killed at the end, pass or fail.

The Redis db index is our own for the whole session: the first of ``ROBUSTLAB_TEST_RELIABILITY_REDIS_DBS``
(default ``12,13,14,15``; the shared e2e stack uses 11) on which a lock key can be set with ``NX``. Other
sessions share this Redis, so the tests only ever ``FLUSHDB`` that index (never ``FLUSHALL``) and put the lock
back after each flush.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from reliability_harness import Services

from db.migrate import upgrade

LOCK_KEY = "robustlab:reliability-tests:owner"
LOCK_TTL_S = 900
REDIS_URL = os.environ.get("ROBUSTLAB_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")  # as tests/conftest.py


def service_unavailable(reason: str) -> None:
    """Skip without the service; in CI (``CI`` set) fail (as tests/conftest.py)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the service tests)")
    pytest.skip(reason)


class Broker:
    """Our Redis db index: ``url`` for the services, ``client`` for the test, ``flush()`` to lose every message."""

    def __init__(self, url: str, token: str) -> None:
        import redis

        self.url, self.token = url, token
        self.client = redis.Redis.from_url(url, socket_connect_timeout=3)

    def flush(self) -> None:
        """``FLUSHDB`` on this index only (what a Redis restart without persistence does to the queues), and the
        lock put back in the same transaction (no other session can take the index in between); fails if another
        session holds the index."""
        import redis

        with self.client.pipeline() as pipe:
            pipe.watch(LOCK_KEY)
            owner = pipe.get(LOCK_KEY)
            if owner not in (None, self.token.encode()):
                pytest.fail(f"{self.url}: another test session took this Redis index ({LOCK_KEY} = {owner!r})")
            pipe.multi()
            pipe.flushdb()
            pipe.set(LOCK_KEY, self.token, ex=LOCK_TTL_S)
            try:
                pipe.execute()
            except redis.WatchError:
                pytest.fail(f"{self.url}: another test session took this Redis index")


@pytest.fixture(scope="session")
def reliability_broker() -> Iterator[Broker]:
    import redis

    base = REDIS_URL.rsplit("/", 1)[0]
    candidates = os.environ.get("ROBUSTLAB_TEST_RELIABILITY_REDIS_DBS", "12,13,14,15").split(",")
    token = uuid.uuid4().hex
    broker = None
    try:
        for index in candidates:
            client = redis.Redis.from_url(f"{base}/{index.strip()}", socket_connect_timeout=3)
            if client.set(LOCK_KEY, token, nx=True, ex=LOCK_TTL_S):
                broker = Broker(f"{base}/{index.strip()}", token)
                break
            client.close()
    except redis.RedisError as exc:
        service_unavailable(f"Redis not reachable at {base}: {exc}")
    if broker is None:
        pytest.fail(f"every Redis db index in {candidates} is in use by another test session ({LOCK_KEY} is set)")
    yield broker
    broker.client.flushdb()
    broker.client.close()


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
