"""Engines and sessions.

One engine per database URL, created on first use and cached for the life of the process::

    from db.session import session_scope

    with session_scope() as session:          # URL from ROBUSTLAB_DATABASE_URL
        job = jobs.get_job(session, job_id)

SQLite (the embedded default) is shared by the API and the worker, which write at the same time: every connection
runs in WAL mode (readers do not block the writer) with a 30 s busy timeout (a writer waits for the lock instead of
failing with "database is locked"), and foreign keys on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from db.config import get_settings

SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 10

_lock = threading.RLock()
_engines: dict[str, Engine] = {}
_factories: dict[str, sessionmaker[Session]] = {}


def _sqlite_on_connect(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    connect_args: dict[str, object] = {}
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        # an unreachable server fails the request (API: 503) after this many seconds instead of hanging
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def get_engine(url: str | None = None) -> Engine:
    """The cached engine for ``url`` (default: ``settings.database_url``)."""
    url = url or get_settings().database_url
    engine = _engines.get(url)
    if engine is None:
        with _lock:
            engine = _engines.get(url)
            if engine is None:
                engine = _engines[url] = _create_engine(url)
    return engine


def get_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    url = url or get_settings().database_url
    factory = _factories.get(url)
    if factory is None:
        with _lock:
            factory = _factories.get(url)
            if factory is None:
                # expire_on_commit=False: rows returned by the repository stay readable after the session ends.
                factory = _factories[url] = sessionmaker(bind=get_engine(url), expire_on_commit=False)
    return factory


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success, rolls back on error and is always closed."""
    session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_engines() -> None:
    """Close every cached engine's connections (tests, and after a fork)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _factories.clear()
