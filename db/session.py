"""Engines and sessions.

One engine per database URL, created on first use and cached for the life of the process::

    from db.session import session_scope

    with session_scope() as session:          # URL from ROBUSTLAB_DATABASE_URL
        job = jobs.get_job(session, job_id)

SQLite (the embedded default) is shared by the API and the worker, which write at the same time: every connection
runs in WAL mode (readers do not block the writer) with a 30 s busy timeout (a writer waits for the lock instead of
failing with "database is locked"), and foreign keys on.

A server database (PostgreSQL) bounds every wait for a connection: connecting times out after
:data:`PG_CONNECT_TIMEOUT_S`, waiting for a pooled one after :data:`POOL_TIMEOUT_S`, and after a connect timed out
the next ones fail at once for :data:`CONNECT_FAILED_HOLD_S` (:class:`ConnectGate`), so a burst of requests against
a hung server is answered (API: 503) within about one connect timeout.

A server database (PostgreSQL) checks a pooled connection with a ``SELECT 1`` before handing it out only when it
has sat idle in the pool for :data:`PING_AFTER_IDLE_S` or more (:func:`_ping_idle_connections`): the server or a
network device may have dropped it meanwhile. A connection that was in use a moment ago is handed out as it is —
under load that saves a round trip per request (``pool_pre_ping`` pings on every checkout) — and if the server went
away since, the failing statement invalidates the pool like a failed ping would (the API answers that request 503).

JSON columns (job specs, the leaderboard's metrics) are decoded with orjson, several times faster than the
standard library (:func:`_json_loads`).

:func:`read_connection` is a plain connection (no ORM session) for reads that need no transaction around them
(one statement, e.g. the leaderboard's ranking query): on PostgreSQL it is in autocommit mode, which saves the
``BEGIN`` and ``COMMIT`` round trips.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import orjson
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.orm import Session, sessionmaker

from core.config import get_settings

SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 10
POOL_TIMEOUT_S = PG_CONNECT_TIMEOUT_S  # the longest wait for a pooled connection (SQLAlchemy's default: 30 s)
SLOW_CONNECT_S = 1.0  # a connect that fails after this long means a hung server (ConnectGate)
CONNECT_FAILED_HOLD_S = 2.0  # after a slow failed connect, new connects fail at once for this long (then try again)
PING_AFTER_IDLE_S = 1.0
POOL_SIZE = 5  # connections a server database's pool keeps open (SQLAlchemy's default; up to 10 more while busy)

T = TypeVar("T")

_lock = threading.RLock()
_engines: dict[str, Engine] = {}
_factories: dict[str, sessionmaker[Session]] = {}
_readers: dict[str, Engine] = {}


def _sqlite_on_connect(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _json_loads(text: str | bytes) -> object:
    """``json.loads``, done by orjson; the standard library for what orjson refuses (integers beyond 64 bits, NaN)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _ping_idle_connections(engine: Engine, idle_seconds: float = PING_AFTER_IDLE_S) -> None:
    """Ping a pooled connection on checkout if it was checked in ``idle_seconds`` ago or more; a failed ping
    invalidates the pool and the checkout goes on with a new connection (an unreachable server: its error)."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection, record) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, _proxy) -> None:
        checked_in_at = record.info.get("checked_in_at")  # None: a new connection (.info is per DBAPI connection)
        if checked_in_at is None or time.monotonic() - checked_in_at < idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise InvalidatePoolError(f"idle connection lost: {exc}") from exc


class ConnectGate:
    """Fail fast while the database is known to hang: after a connect attempt failed *slowly* (no answer for
    :data:`SLOW_CONNECT_S` or more: a hung server or network, not a refusal), every new connect in the next
    ``hold_s`` seconds fails at once with the same error instead of waiting out its own timeout. A burst of
    requests against a hung server then gets its 503s within about one connect timeout: the requests that queued
    for the pool meanwhile would otherwise each start another 10 s attempt, wave after wave. A quick failure (a
    refused connection) does not close the gate: retrying it costs nothing, and a restarted server is seen at once.
    """

    def __init__(self, hold_s: float = CONNECT_FAILED_HOLD_S) -> None:
        self.hold_s = hold_s
        self._failed_at = -float("inf")
        self._error: Exception | None = None

    def connect(self, dialect, cargs, cparams):
        since = time.monotonic() - self._failed_at
        if self._error is not None and since < self.hold_s:
            raise type(self._error)(f"{self._error} (a connect timed out {since:.1f} s ago)")
        start = time.monotonic()
        try:
            return dialect.loaded_dbapi.connect(*cargs, **cparams)
        except dialect.loaded_dbapi.OperationalError as exc:
            if time.monotonic() - start >= SLOW_CONNECT_S:
                self._failed_at, self._error = time.monotonic(), exc
            raise


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            json_deserializer=_json_loads,
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    connect_args: dict[str, object] = {}
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        # an unreachable server fails the request (API: 503) after this many seconds instead of hanging
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    engine = create_engine(
        url,
        pool_size=POOL_SIZE,
        pool_timeout=POOL_TIMEOUT_S,  # a pool timeout is a 503 too (api.errors), within the same bound
        connect_args=connect_args,
        json_deserializer=_json_loads,
    )
    gate = ConnectGate()
    event.listen(engine, "do_connect", lambda dialect, _record, cargs, cparams: gate.connect(dialect, cargs, cparams))
    _ping_idle_connections(engine)
    return engine


def _cached(cache: dict[str, T], url: str, make: Callable[[str], T]) -> T:
    """``cache[url]``, made by ``make(url)`` once (double-checked: a hit takes no lock)."""
    value = cache.get(url)
    if value is None:
        with _lock:
            value = cache.get(url)
            if value is None:
                value = cache[url] = make(url)
    return value


def get_engine(url: str | None = None) -> Engine:
    """The cached engine for ``url`` (default: ``settings.database_url``)."""
    return _cached(_engines, url or get_settings().database_url, _create_engine)


def get_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    # expire_on_commit=False: rows returned by the repository stay readable after the session ends.
    return _cached(
        _factories,
        url or get_settings().database_url,
        lambda url: sessionmaker(bind=get_engine(url), expire_on_commit=False),
    )


def _autocommit_engine(url: str) -> Engine:
    engine = get_engine(url)
    return engine if engine.dialect.name == "sqlite" else engine.execution_options(isolation_level="AUTOCOMMIT")


def _read_engine(url: str | None = None) -> Engine:
    """The engine for ``url`` in autocommit mode (the same pool; SQLite as it is: its transactions are local)."""
    return _cached(_readers, url or get_settings().database_url, _autocommit_engine)


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


@contextmanager
def read_connection(url: str | None = None) -> Iterator[Connection]:
    """A pooled connection for reads, each statement seeing the database as it is when it runs (no transaction
    around them: autocommit on PostgreSQL). Cheaper than a session: no ORM bookkeeping, no round trips but the
    statements'. Not for writes."""
    with _read_engine(url).connect() as connection:
        yield connection


def dispose_engines() -> None:
    """Close every cached engine's connections (tests, and after a fork)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _factories.clear()
        _readers.clear()
