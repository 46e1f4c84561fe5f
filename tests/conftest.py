"""Shared fixtures for the service tests: real PostgreSQL, Redis and SQLite; real API + worker processes.

* ``pg_admin``: a superuser connection string to PostgreSQL on 127.0.0.1:5432 (user ``postgres`` or ``root``,
  database ``test``; override with ``ROBUSTLAB_TEST_PG_ADMIN``). Tests that need it are skipped when it is down
  (failed when ``CI`` is set).
* ``make_pg_database()``: a fresh ``robustlab_test_<hex>`` database, dropped at the end of the session;
  ``pg_url``: one such database for the session, migrated.
* ``redis_url``: a Redis db index on 127.0.0.1:6379 held by this session (11, ``ROBUSTLAB_TEST_REDIS_URL``, or the
  next free one), flushed before and after.
* ``sqlite_url``: a migrated SQLite file in the test's tmp dir.
* ``pg_stack``: API + worker subprocesses on PostgreSQL + Redis (see ``service_helpers.start_services``), shared by
  the e2e and CLI tests; their logs are attached to the report of a failing test.
"""

from __future__ import annotations

import importlib.util
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from service_helpers import Stack, start_services

# The models under test are tiny: one intra-op thread is several times faster than two on a shared 2-core machine
# (the same choice as the worker's ROBUSTLAB_TORCH_THREADS default).
torch.set_num_threads(1)

PG_ADMIN_CANDIDATES = [
    os.environ.get("ROBUSTLAB_TEST_PG_ADMIN"),
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://root@127.0.0.1:5432/test",
]
REDIS_URL = os.environ.get("ROBUSTLAB_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")


def service_unavailable(reason: str) -> None:
    """Skip on a developer machine without the service; in CI (``CI`` set) a missing service is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the service tests)")
    pytest.skip(reason)


# ---------------------------------------------------------------------------------------------------- PostgreSQL
@pytest.fixture(scope="session")
def pg_admin() -> str:
    import psycopg

    errors = []
    for conninfo in filter(None, PG_ADMIN_CANDIDATES):
        try:
            with psycopg.connect(conninfo, connect_timeout=3, autocommit=True) as conn:
                conn.execute("SELECT 1")
            return conninfo
        except psycopg.Error as exc:
            errors.append(f"{conninfo}: {exc}")
    service_unavailable("PostgreSQL not reachable: " + "; ".join(errors))


@pytest.fixture(scope="session")
def make_pg_database(pg_admin: str) -> Iterator[Callable[[], str]]:
    import psycopg

    created: list[str] = []
    server = pg_admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)

    def make() -> str:
        name = f"robustlab_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"{server}/{name}"

    yield make

    from db.session import dispose_engines

    dispose_engines()
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url(make_pg_database: Callable[[], str]) -> str:
    from db.migrate import upgrade

    url = make_pg_database()
    upgrade(url)
    return url


# ---------------------------------------------------------------------------------------------------- Redis, SQLite
@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis db index held by this session (``ROBUSTLAB_TEST_REDIS_URL``'s, else the next free of 10, 9, 8: a CI
    run beside a local run does not flush the other's queues), empty at the start."""
    from service_helpers import claim_redis_index

    base, first = REDIS_URL.rsplit("/", 1)
    broker = claim_redis_index(base, [first, "10", "9", "8"], service_unavailable)
    yield broker.url
    broker.release()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    from db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'robustlab.db'}"
    upgrade(url)
    return url


# ---------------------------------------------------------------------------------------------------- processes
@pytest.fixture(scope="session")
def pg_stack(pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_services(pg_url, redis_url, tmp_path_factory.mktemp("pg-stack"))
    yield stack
    stack.stop()


# ---------------------------------------------------------------------------------------------------- protocol
@pytest.fixture
def bump_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], int]]:
    """``bump_revision(name)``: for this test, evaluation ``name``'s module in the protocol registry is a copy of its
    source with ``PROTOCOL_REVISION`` one higher — what a developer commits when the evaluation's numbers change on
    purpose; returns the new revision. The registry's cache is cleared then, and again when the test ends."""
    from core import protocol
    from evaluation import registry

    def bump(name: str) -> int:
        module = protocol.EVALUATIONS[name]
        origin = importlib.util.find_spec(module).origin
        revision = protocol.declared_revision(module) + 1
        source, count = re.subn(
            r"^PROTOCOL_REVISION = \d+$", f"PROTOCOL_REVISION = {revision}", Path(origin).read_text(), flags=re.M
        )
        assert count == 1, f"{module}: one top-level PROTOCOL_REVISION expected"
        copy = f"bumped_{name}_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{copy}.py").write_text(source)
        monkeypatch.syspath_prepend(str(tmp_path))
        # the copy is now the evaluation: its registration replaces the module's (evaluation.registry)
        registry.registered("classification")  # the real modules are imported and registered first
        kept = {key: e for key, e in registry._REGISTERED.items() if e.run.__module__ != module}
        monkeypatch.setattr(registry, "_REGISTERED", kept)
        monkeypatch.setitem(protocol.EVALUATIONS, name, copy)
        protocol.current_revisions.cache_clear()
        return revision

    yield bump
    monkeypatch.undo()
    protocol.current_revisions.cache_clear()


# ---------------------------------------------------------------------------------------------------- image datasets
@pytest.fixture(scope="session")
def image_files(tmp_path_factory: pytest.TempPathFactory):
    """MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 files of a few images each, in their published formats
    (``image_files.write_image_files``), written once per session. Read them only: a test that damages a file
    writes its own copy."""
    from image_files import write_image_files

    return write_image_files(tmp_path_factory.mktemp("image-data"))


@pytest.fixture
def image_data_dir(image_files, monkeypatch: pytest.MonkeyPatch):
    """``ROBUSTLAB_DATA_DIR`` = the generated image files, their checksums in place of the published ones, the
    sources an unreachable local address (``image_files.use_files``): every image dataset loads, offline."""
    from image_files import use_files

    from core.config import get_settings

    use_files(monkeypatch, image_files.root, image_files.checksums)
    yield image_files
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Stack):
                report.sections.append(("service logs", value.tail(120)))
    return report
