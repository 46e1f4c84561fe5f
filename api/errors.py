"""Errors the API answers the same way on every route.

Registered by :func:`api.main.create_app`:

* an unreachable database is ``503`` with a JSON ``detail`` and ``Retry-After`` (documented on every ``/api/v1``
  operation), not a ``500``::

      HTTP/1.1 503 Service Unavailable
      Retry-After: 5
      {"detail": "database unavailable (OperationalError); retry later"}

* a NUL character (``\\x00``) in a path or query parameter or in a JSON body is ``422``, in FastAPI's validation
  error format, before it reaches PostgreSQL (whose text columns cannot hold it: a ``500`` otherwise);
* a body that cannot be decoded (not UTF-8) is ``422`` (``json_invalid``), as malformed JSON is, and a malformed
  multipart form is ``422`` with a ``detail`` string, as the upload routes document it (FastAPI and Starlette: an
  undocumented ``400``);
* ``405 Method Not Allowed`` lists in ``Allow`` every method of the path, not only those of the first route that
  matched it (Starlette's default).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.responses import Response

from api.schemas import Message

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
BODY_PARSE_ERROR = "There was an error parsing the body"  # FastAPI's 400 detail
HTTP_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"})
DATABASE_UNAVAILABLE_RESPONSE: dict[int | str, dict[str, Any]] = {
    503: {"model": Message, "description": "the database is unreachable; retry later (see Retry-After)"}
}


async def database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    """``503`` for a refused, terminated or timed-out database connection. The driver's message (host, database
    name) goes to the log, not to the client."""
    log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
    return JSONResponse(
        status_code=503,
        content={"detail": f"database unavailable ({type(exc).__name__}); retry later"},
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI schema documents for the path template that ``path`` matches (plus ``HEAD``,
    which Starlette serves for every ``GET``)."""
    templates = getattr(app.state, "allow_templates", None)
    if templates is None:
        templates = app.state.allow_templates = [
            (re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"), operations)
            for template, operations in app.openapi().get("paths", {}).items()
        ]
    for pattern, operations in templates:
        if pattern.match(path):
            methods = {method.upper() for method in operations if method.upper() in HTTP_METHODS}
            return sorted(methods | ({"HEAD"} if "GET" in methods else set()))
    return []


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """FastAPI's own handler, except: a body that cannot be decoded or parsed as a form is a ``422`` (as malformed
    JSON is; FastAPI and Starlette answer an undocumented ``400``), and ``Allow`` lists every method of the path on
    a ``405`` (Starlette lists only those of the first route whose path matched)."""
    if exc.status_code == 400 and exc.detail == BODY_PARSE_ERROR:  # e.g. a body that is not UTF-8
        detail = [{"type": "json_invalid", "loc": ["body"], "msg": "the body is not valid JSON", "input": None}]
        return JSONResponse(status_code=422, content={"detail": detail})
    if exc.status_code == 400 and isinstance(exc.__context__, MultiPartException):  # a malformed form
        # only the upload routes read forms: their 422 is documented as a ``Message`` (``detail`` a string)
        return JSONResponse(status_code=422, content={"detail": f"malformed form: {exc.detail}"})
    if exc.status_code == 405:
        allowed = _allowed_methods(request.app, request.url.path)
        if allowed:
            headers = {**(exc.headers or {}), "Allow": ", ".join(allowed)}
            exc = StarletteHTTPException(405, exc.detail, headers=headers)
    return await http_exception_handler(request, exc)


def _nul_strings(value: Any, loc: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str]]:
    if isinstance(value, str):
        if "\x00" in value:
            yield loc, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _nul_strings(key, (*loc, key))
            yield from _nul_strings(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nul_strings(item, (*loc, index))


def _walk(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _walk(sub)


async def reject_nul_characters(request: Request) -> None:
    """A router dependency: ``422`` for a NUL character in a path parameter, a query parameter the route reads, or
    a string of its JSON body."""
    route = request.scope.get("route")
    dependants = list(_walk(route.dependant)) if isinstance(route, APIRoute) else []
    declared = {param.alias for dependant in dependants for param in dependant.query_params}
    found = [*_nul_strings(dict(request.path_params), ("path",))]
    found += [(("query", k), v) for k, v in request.query_params.multi_items() if k in declared and "\x00" in v]
    has_body = any(dependant.body_params for dependant in dependants)
    if has_body and "json" in request.headers.get("content-type", ""):
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None  # FastAPI reports malformed JSON itself
        found += _nul_strings(body, ("body",))
    if found:
        raise RequestValidationError(
            [
                {"type": "string_nul", "loc": loc, "msg": "String should not contain NUL (0x00) characters", "input": v}
                for loc, v in found
            ]
        )


def install_error_handlers(app: FastAPI) -> None:
    for exc_type in (OperationalError, InterfaceError):
        app.add_exception_handler(exc_type, database_unavailable)
    app.add_exception_handler(StarletteHTTPException, http_error)
