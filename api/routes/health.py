"""``/healthz``: 200 when the database and the broker both answer, 503 naming the one that does not.

The route needs no key, so its body says only which service is down ("database unreachable"); the driver's error
(host, port, database name) goes to the log."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import DispatcherDep, SettingsDep
from api.schemas import ComponentHealth, Health
from core.protocol import current_protocol
from core.provenance import current_code
from db.session import get_engine

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


def _database_error(url: str) -> str | None:
    try:
        with get_engine(url).connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@router.get("/healthz", response_model=Health, responses={503: {"model": Health, "description": "a service is down"}})
def healthz(settings: SettingsDep, dispatcher: DispatcherDep) -> Health | JSONResponse:
    with ThreadPoolExecutor(max_workers=2) as pool:
        db_future = pool.submit(_database_error, settings.database_url)
        broker_future = pool.submit(dispatcher.broker_error)
        db_error, broker_error = db_future.result(), broker_future.result()
    for name, error in (("database", db_error), ("broker", broker_error)):
        if error is not None:
            log.warning("healthz: %s unreachable: %s", name, error)
    health = Health(
        status="ok" if db_error is None and broker_error is None else "unavailable",
        database=ComponentHealth(ok=db_error is None, detail=None if db_error is None else "database unreachable"),
        broker=ComponentHealth(ok=broker_error is None, detail=None if broker_error is None else "broker unreachable"),
        version=current_code().version,
        code_version=current_code().identity,
        protocol_version=current_protocol(),
    )
    if health.status != "ok":
        return JSONResponse(status_code=503, content=health.model_dump(mode="json"))
    return health
