"""Server-rendered web pages (Jinja2 templates in ``api/templates``, CSS in ``api/static``; no JavaScript).

::

    GET /                               the leaderboard: filters (a GET form), sortable metric columns, cursor pages
    GET /jobs/{id}                      one job: status and progress (refreshes itself while queued or running),
                                        metrics, the worker's PNG plots, the spec
    GET /jobs/{id}/plots/{file}.png     one of those plots, streamed from the job's artifacts directory
    GET /compare?jobs=a,b[,c[,d]]       2–4 jobs side by side, with overlaid curves
    GET /compare/plot.png?jobs=…&kind=  one overlay (kinds: :data:`api.web_plots.COMPARE_KINDS`), drawn on request
    GET|POST /login, POST /logout       keep an API key in an HttpOnly cookie (for ROBUSTLAB_PUBLIC_READ=false)

One module per page group (:mod:`.leaderboard`, :mod:`.jobs`, :mod:`.compare`, :mod:`.login`); :mod:`.base` holds
what they share. The pages read through the same functions as the JSON API
(:func:`api.routes.leaderboard.leaderboard_page`, :func:`api.routes.leaderboard.compare`, :mod:`db.jobs`) and follow
the same read policy (:func:`api.security.require`): open, public reads, or an API key, sent as
``Authorization: Bearer`` or kept in the ``robustlab_key`` cookie by ``/login``. Their query parameters are
declared and validated by FastAPI; errors are HTML pages (:class:`~api.routes.web.base.PageRoute`): 404 for an
unknown job, 422 naming the bad parameter (unknown metric, not 2–4 jobs, …), 401 with a key form when a key is
needed. The routers are mounted at the root, outside ``/api/v1``, and left out of the OpenAPI schema
(:func:`install`).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api.routes.web import compare, jobs, leaderboard, login
from api.routes.web.base import STATIC_DIR

ROUTERS = (leaderboard.router, jobs.router, compare.router, login.router)


def install(app: FastAPI) -> None:
    """Mount the pages at the root (outside the OpenAPI schema) and ``/static``."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for router in ROUTERS:
        app.include_router(router, include_in_schema=False)


__all__ = ["install"]
