"""Injected dependencies: settings, a database session per request, the job dispatcher."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.dispatch import Dispatcher
from db.config import Settings
from db.session import session_scope


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
