"""Errors the API answers the same way on every route.

Registered by :func:`api.main.create_app`:

* an unreachable database, or no pooled connection free within the pool timeout, is ``503`` with a JSON
  ``detail`` and ``Retry-After`` (documented on every ``/api/v1`` operation), not a ``500``::

      HTTP/1.1 503 Service Unavailable
      Retry-After: 5
      {"detail": "database unavailable (OperationalError); retry later"}

* a NUL character (``\\x00``) in a path or query parameter or in a JSON body is ``422``, in FastAPI's validation
  error format, before it reaches PostgreSQL (whose text columns cannot hold it: a ``500`` otherwise); so are a
  lone surrogate (``"\\ud800"``: not encodable as UTF-8) and a non-finite number in a JSON body (the tokens
  ``NaN``, ``Infinity`` and numbers such as ``1e999`` that overflow a double), which Python's JSON parser accepts;
* a validation error never echoes what JSON cannot carry: a non-finite number or a lone surrogate in an error's
  ``input`` is sent as an escaped string (FastAPI's own handler fails on them: a ``500``);
* a body that cannot be decoded (not UTF-8) is ``422`` (``json_invalid``), as malformed JSON is, and a malformed
  multipart form is ``422`` with a ``detail`` string, as the upload routes document it (FastAPI and Starlette: an
  undocumented ``400``);
* ``405 Method Not Allowed`` lists in ``Allow`` every method of the path, not only those of the first route that
  matched it (Starlette's default).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
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


NUL_ERROR = ("string_nul", "String should not contain NUL (0x00) characters")
SURROGATE_ERROR = ("string_unicode", "String should not contain a lone surrogate (not encodable as UTF-8)")
NON_FINITE_ERROR = ("finite_number", "Input should be a finite number (not NaN, Infinity or beyond ±1.8e308)")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_safe(value: Any) -> Any:
    """``value`` with what JSON cannot carry made printable: a non-finite float as its ``repr`` (``'nan'``), a
    string with a lone surrogate with it escaped (``'\\\\ud800'``); containers are walked."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return value if _encodable(value) else value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {json_safe(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def _bad_values(value: Any, loc: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any, tuple[str, str]]]:
    """``(location, value, (error type, message))`` of every string with a NUL or a lone surrogate and every
    non-finite number in a parsed JSON value (keys included). Iterative: a body may nest as deep as the parser
    allows."""
    stack = [(loc, value)]
    while stack:
        loc, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                yield loc, value, NUL_ERROR
            if not _encodable(value):
                yield loc, value, SURROGATE_ERROR
        elif isinstance(value, float):
            if not math.isfinite(value):
                yield loc, value, NON_FINITE_ERROR
        elif isinstance(value, dict):
            for key, item in reversed(value.items()):
                stack += [((*loc, json_safe(key)), item), ((*loc, json_safe(key)), key)]
        elif isinstance(value, list):
            stack += [((*loc, index), item) for index, item in reversed(list(enumerate(value)))]


def _walk(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _walk(sub)


async def reject_unstorable_input(request: Request) -> None:
    """A router dependency: ``422`` for a NUL character or a lone surrogate in a path parameter, a query parameter
    the route reads, or a string of its JSON body, and for a non-finite number in its JSON body."""
    route = request.scope.get("route")
    dependants = list(_walk(route.dependant)) if isinstance(route, APIRoute) else []
    declared = {param.alias for dependant in dependants for param in dependant.query_params}
    found = [*_bad_values(dict(request.path_params), ("path",))]
    for key, value in request.query_params.multi_items():
        if key in declared:
            found += _bad_values(value, ("query", key))
    has_body = any(dependant.body_params for dependant in dependants)
    if has_body and "json" in request.headers.get("content-type", ""):
        try:
            body = json.loads(await request.body())
        except (ValueError, RecursionError):
            body = None  # FastAPI reports malformed JSON itself
        found += _bad_values(body, ("body",))
    if found:
        raise RequestValidationError(
            [{"type": kind, "loc": loc, "msg": msg, "input": json_safe(v)} for loc, v, (kind, msg) in found]
        )


async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's ``422`` with every error made JSON-safe (:func:`json_safe`): its own handler fails to render an
    error that echoes a non-finite number or a lone surrogate, and answers ``500``."""
    try:
        detail = json_safe(jsonable_encoder(json_safe(exc.errors())))
    except RecursionError:  # an input nested too deep to echo: the errors without their inputs
        errors = [{key: value for key, value in error.items() if key not in ("input", "ctx")} for error in exc.errors()]
        detail = json_safe(jsonable_encoder(json_safe(errors)))
    return JSONResponse(status_code=422, content={"detail": detail})


def install_error_handlers(app: FastAPI) -> None:
    for exc_type in (OperationalError, InterfaceError, PoolTimeoutError):
        app.add_exception_handler(exc_type, database_unavailable)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
