"""Injected dependencies: settings, a database session per request, the job dispatcher; :func:`run_db` for an
``async`` route's blocking database work."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, TypeVar

import anyio
from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.dispatch import Dispatcher
from core.config import Settings
from db.session import POOL_SIZE, session_scope

T = TypeVar("T")


# Dependencies that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, and
# each such hop costs more than the work (the leaderboard's latency is mostly these hops otherwise).
async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_db(settings: SettingsDep) -> Iterator[Session]:
    with session_scope(settings.database_url) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]


async def get_dispatcher(request: Request) -> Dispatcher:
    return request.app.state.dispatcher


DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]


async def run_db(request: Request, func: Callable[..., T], *args: object) -> T:
    """``func(*args)`` — blocking database work — in the thread pool, at most :data:`~db.session.POOL_SIZE` calls at
    a time per process; the others wait their turn here, in order. Unbounded (FastAPI's pool has 40 threads), the
    calls beyond the pool's size each open a connection of their own and close it afterwards (a new PostgreSQL
    backend every few requests under load), and more threads only contend for the GIL."""
    limiter = getattr(request.app.state, "db_limiter", None)
    if limiter is None:  # made on first use, in the event loop that serves the app
        limiter = request.app.state.db_limiter = anyio.CapacityLimiter(POOL_SIZE)
    return await anyio.to_thread.run_sync(func, *args, limiter=limiter)
