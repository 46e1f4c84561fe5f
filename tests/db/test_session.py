"""Pooled PostgreSQL connections: pinged only after sitting idle, and a connection the server dropped is replaced
either way (at checkout when it was idle; after the one failing statement when it was in use a moment ago)."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from db.session import PING_AFTER_IDLE_S, get_engine, read_connection

pytestmark = pytest.mark.services


def _backend_pid(url: str) -> int:
    with get_engine(url).connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def _terminate(pg_admin: str, pid: int) -> None:
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]


def _age_pooled_connections(url: str, seconds: float) -> None:
    """Make every pooled connection look as if it was checked in ``seconds`` earlier."""
    pool = get_engine(url).pool
    for record in list(pool._pool.queue):  # QueuePool's idle connection records
        record.info["checked_in_at"] -= seconds


def test_idle_connection_dropped_by_the_server_is_replaced_at_checkout(
    make_pg_database: Callable[[], str], pg_admin: str
) -> None:
    url = make_pg_database()
    first = _backend_pid(url)
    _terminate(pg_admin, first)
    _age_pooled_connections(url, PING_AFTER_IDLE_S + 1)
    second = _backend_pid(url)  # the ping failed: a new connection, no error
    assert second != first


def test_busy_connection_dropped_by_the_server_fails_one_statement_then_recovers(
    make_pg_database: Callable[[], str], pg_admin: str
) -> None:
    url = make_pg_database()
    first = _backend_pid(url)
    _terminate(pg_admin, first)  # checked in a moment ago: no ping on the next checkout
    with pytest.raises(OperationalError), read_connection(url) as connection:
        connection.execute(text("SELECT 1"))  # the API answers this request 503
    assert _backend_pid(url) != first  # the pool was invalidated: the next request works
