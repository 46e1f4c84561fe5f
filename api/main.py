"""The FastAPI application.

``uvicorn api.main:app`` serves the module-level ``app`` (settings from ``ROBUSTLAB_*``); tests and embedders call
:func:`create_app` with their own :class:`~core.config.Settings`. OpenAPI docs at ``/docs``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from api.dispatch import Dispatcher, RecoveryLoop
from api.errors import DATABASE_UNAVAILABLE_RESPONSE, install_error_handlers, reject_unstorable_input
from api.limits import BodySizeLimit
from api.ratelimit import RateLimiter
from api.routes import api_router, health, web
from core.config import Settings, get_settings
from core.protocol import current_protocol
from core.provenance import current_code

API_PREFIX = "/api/v1"


def create_app(settings: Settings | None = None, recovery: bool = True) -> FastAPI:
    """Build the app. With ``recovery`` a background thread re-sends queued jobs at start-up and re-queues jobs
    whose worker was lost (see :mod:`api.dispatch`)."""
    settings = settings or get_settings()
    current_code(), current_protocol()  # once, at start-up (git, the sources): a missing declaration fails here
    dispatcher = Dispatcher(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        _log_to_stderr("api")  # the recovery sweep's reports (uvicorn configures only its own loggers)
        loop = RecoveryLoop(dispatcher) if recovery else None
        if loop is not None:
            loop.start()
        try:
            yield
        finally:
            if loop is not None:
                loop.stop()

    app = FastAPI(
        title="robustlab",
        version=current_code().version,
        description="Robustness benchmarking service: submit a job spec, follow the job, read results and the "
        "leaderboard.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.dispatcher = dispatcher
    app.state.rate_limiter = RateLimiter(settings)
    app.add_middleware(BodySizeLimit, settings=settings)  # 413 for specs / uploads over the limits
    app.include_router(health.router)  # /healthz for load balancers and `robustlab up`
    app.include_router(
        api_router,
        prefix=API_PREFIX,
        responses=DATABASE_UNAVAILABLE_RESPONSE,
        dependencies=[Depends(reject_unstorable_input)],  # 422, not a 500 from PostgreSQL
    )
    install_error_handlers(app)  # database unreachable: 503 JSON, not 500
    web.install(app)  # HTML pages at /, /jobs/{id}, /compare (not in the OpenAPI schema) and /static
    return app


def _log_to_stderr(name: str) -> None:
    """INFO and above of the ``name`` loggers to stderr, unless logging is configured already."""
    logger = logging.getLogger(name)
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


app = create_app()
