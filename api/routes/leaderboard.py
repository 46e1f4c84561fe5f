"""``/leaderboard``: succeeded jobs ranked by any metric, filtered and paginated; ``/compare``: jobs side by side.

::

    GET /api/v1/leaderboard?dataset=spirals&metric=pgd_linf_acc&eps=0.1&order=desc&limit=20
    GET /api/v1/leaderboard?…same filters…&cursor=<next_cursor of the previous page>
    GET /api/v1/compare?jobs=<id>,<id>,<id>
    GET /api/v1/leaderboard?…&format=csv           (or format=robustbench: RobustBench model_info objects)

Pages are cut by keyset pagination on ``(value, job id)`` (:func:`db.leaderboard.leaderboard`): the cursor is an opaque
token holding the last row's key, the next rank and a fingerprint of the query, so it is only valid with the same
filters, and a page is as fast on page 500 as on page 1. :func:`leaderboard_page` and :func:`compare` are the
query logic, shared with the web pages (:mod:`api.routes.web`); :mod:`api.exports` writes the CSV and RobustBench
forms.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from typing import Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic_core import to_json
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from api import exports
from api.deps import SessionDep, SettingsDep, run_db
from api.schemas import CompareJob, Comparison, Leaderboard, Message
from api.security import ReadAccess
from core.families import hyper_parameters
from core.metrics import NAME_PATTERN, metric_key
from core.protocol import current_protocol
from db import jobs
from db.leaderboard import leaderboard, metrics_of
from db.session import read_connection, session_scope

router = APIRouter(prefix="/leaderboard", tags=["leaderboard"])
compare_router = APIRouter(prefix="/compare", tags=["leaderboard"])

METRIC_PATTERN = NAME_PATTERN  # the catalog's grammar (core.metrics): kind, its σ if it has one, @level
MAX_COMPARE = 50
MAX_CURSOR_RANK = 2**31 - 1  # a decoded cursor outside these bounds was not made by this API
MAX_CURSOR_ID = 64
JSON = "application/json"


def invalid_query(location: str, message: str, value: object = None) -> RequestValidationError:
    """A 422 naming the query parameter ``location`` (the JSON API answers it as FastAPI does, a web page as HTML)."""
    return RequestValidationError([{"loc": ("query", location), "msg": message, "type": "value_error", "input": value}])


def full_metric(metric: str, eps: float | None, sigma: float | None) -> str:
    """``metric`` with its level: ``pgd_linf_acc`` + ``eps=0.1`` → ``pgd_linf_acc@0.1``; ``gaussian_acc@0.30`` →
    ``gaussian_acc@0.3`` (levels are written as the runner writes them)."""
    if eps is not None and sigma is not None:
        raise invalid_query("sigma", "give eps or sigma, not both", sigma)
    level = eps if eps is not None else sigma
    kind, at, written = metric.partition("@")
    if at:
        try:
            parsed = float(written)
        except ValueError:
            raise invalid_query("metric", f"{written!r} after '@' is not a number", metric) from None
        if level is not None and metric_key(kind, level) != metric_key(kind, parsed):
            where = "eps" if eps is not None else "sigma"
            raise invalid_query(where, f"contradicts the level in metric {metric!r}", level)
        level = parsed
    return metric_key(kind, level)


def _fingerprint(*query: object) -> str:
    return hashlib.sha256(json.dumps(query).encode()).hexdigest()[:16]


def encode_cursor(value: float, job_id: str, rank: int, fingerprint: str) -> str:
    payload = json.dumps({"v": value, "id": job_id, "r": rank, "q": fingerprint}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, fingerprint: str) -> tuple[tuple[float, str], int]:
    """``((value, job_id), next rank)`` from a cursor made for the same query."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        after = (float(data["v"]), str(data["id"]))
        rank, query = int(data["r"]), data["q"]
        if not math.isfinite(after[0]) or not 1 <= rank <= MAX_CURSOR_RANK or len(after[1]) > MAX_CURSOR_ID:
            raise ValueError("out of range")
        after[1].encode()  # a lone surrogate (from a "\\ud800" escape) cannot be sent to the database
    except (ValueError, TypeError, KeyError, OverflowError, UnicodeError, AttributeError):
        raise invalid_query("cursor", "not a cursor of this API (pass next_cursor back unchanged)", cursor) from None
    if query != fingerprint:
        raise invalid_query("cursor", "this cursor belongs to a query with other filters, metric or order", cursor)
    return after, rank


EXPORT_RESPONSES: dict[int | str, dict] = {
    200: {
        "description": "the leaderboard: JSON (default), CSV (format=csv) or RobustBench model_info objects "
        "(format=robustbench)",
        "content": {
            exports.CSV_MEDIA_TYPE: {"schema": {"type": "string"}},
            exports.ROBUSTBENCH_MEDIA_TYPE: {"schema": {"type": "array", "items": exports.ROBUSTBENCH_ITEM_SCHEMA}},
        },
        "headers": {
            "X-Next-Cursor": {
                "description": "format=csv / robustbench: the next page's cursor (absent on the last page)",
                "schema": {"type": "string"},
            }
        },
    }
}


@router.get(
    "",
    response_model=Leaderboard,
    responses={**EXPORT_RESPONSES, 401: {"model": Message}, 429: {"model": Message}},
)
async def get_leaderboard(
    request: Request,
    settings: SettingsDep,
    _principal: ReadAccess,
    dataset: str | None = Query(None, max_length=64),
    family: str | None = Query(None, max_length=64),
    task: str | None = Query(None, max_length=64),
    metric: str = Query("clean_acc", max_length=100, pattern=METRIC_PATTERN, examples=["pgd_linf_acc@0.1"]),
    eps: float | None = Query(None, gt=0, le=1e3, description="ε of a PGD / certified metric: pgd_linf_acc&eps=0.1"),
    sigma: float | None = Query(None, ge=0, le=1e3, description="σ of gaussian_acc: metric=gaussian_acc&sigma=0.3"),
    order: Literal["desc", "asc"] = "desc",
    limit: int = Query(20, ge=1, le=500),
    cursor: str | None = Query(None, max_length=1000, description="next_cursor of the previous page"),
    current: bool = Query(
        False, description="only entries evaluated under the current protocol (hide stale ones: re-evaluate them)"
    ),
    format_: Literal["json", "csv", "robustbench"] = Query(
        "json",
        alias="format",
        description="json: the Leaderboard object; csv: text/csv, one row per entry (rank, job, hyper-parameters, "
        "the ranking metric, one column per metric on the page); robustbench: a JSON list of RobustBench model_info "
        "objects (accuracies in percent strings, our PGD figure as autoattack_acc, see attack). csv and robustbench "
        "send the next page's cursor in the X-Next-Cursor header.",
    ),
) -> Response:
    """Best first: highest ``metric`` with ``order=desc`` (accuracies), lowest with ``order=asc`` (e.g.
    ``lipschitz_bound``, ``train_seconds``). Each entry has the job's name, family, key hyper-parameters, its
    clean / Gaussian / PGD / certified accuracies, all its metrics, job id and dates. ``next_cursor`` pages on.
    ``format=csv`` / ``format=robustbench`` export the same page (filters, sort and cursor alike). Each entry says
    the protocol version it was evaluated under and whether that is ``stale`` (not the current one);
    ``current=true`` leaves the stale ones out."""
    # async, with all the database work in ONE thread-pool call (run_db): a sync route (and a sync session
    # dependency) costs several thread hops per request, and validating the response model more than the query
    query = (dataset, family, task, metric, eps, sigma, order, limit, cursor, current)
    if format_ == "json":
        return Response(await run_db(request, _leaderboard_json, settings.database_url, query), media_type=JSON)
    return await run_db(request, _leaderboard_export, request, settings.database_url, query, format_)


def _leaderboard_json(database_url: str, query: tuple) -> bytes:
    with read_connection(database_url) as connection:  # one statement: no session, no transaction needed
        board = leaderboard_page(connection, *query)
    return to_json(board)  # pydantic's serialiser: byte for byte what FastAPI writes for the Leaderboard model


def _leaderboard_export(request: Request, database_url: str, query: tuple, format_: str) -> Response:
    with session_scope(database_url) as session:
        board = leaderboard_page(session, *query)
        headers = {}
        if board.next_cursor:
            headers["X-Next-Cursor"] = board.next_cursor
            headers["Link"] = f'<{request.url.include_query_params(cursor=board.next_cursor)}>; rel="next"'
        found = jobs.get_jobs(session, [e.job_id for e in board.entries])  # what ran, the flags
        if format_ == "csv":
            text = exports.leaderboard_csv(board.entries, board.metric, found)
            headers["Content-Disposition"] = 'inline; filename="leaderboard.csv"'
            return Response(text, media_type=f"{exports.CSV_MEDIA_TYPE}; charset=utf-8", headers=headers)
        job_url = str(request.base_url).rstrip("/") + "/jobs/{job_id}"
        models = exports.robustbench_models(board.entries, board.metric, found, job_url)
    return Response(json.dumps(models, ensure_ascii=False), media_type=exports.ROBUSTBENCH_MEDIA_TYPE, headers=headers)


def leaderboard_page(
    session: Session | Connection,
    dataset: str | None = None,
    family: str | None = None,
    task: str | None = None,
    metric: str = "clean_acc",
    eps: float | None = None,
    sigma: float | None = None,
    order: Literal["desc", "asc"] = "desc",
    limit: int = 20,
    cursor: str | None = None,
    current: bool = False,
) -> Leaderboard:
    """One page of the leaderboard (the JSON API, its exports and the web page): ``RequestValidationError`` for a
    bad metric level or a cursor of another query. ``current``: only entries evaluated under the current protocol
    version."""
    metric = full_metric(metric, eps, sigma)
    protocol = current_protocol()
    fingerprint = _fingerprint(metric, order, dataset, family, task, *([protocol] if current else []))
    after, first_rank = decode_cursor(cursor, fingerprint) if cursor else (None, 1)
    rows = leaderboard(
        session,
        dataset=dataset,
        family=family,
        task=task,
        metric=metric,
        limit=limit + 1,  # one more: is there a next page?
        descending=order == "desc",
        after=after,
        first_rank=first_rank,
        protocol_version=protocol if current else None,
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_cursor(last.value, last.job_id, last.rank + 1, fingerprint)
    return Leaderboard(
        metric=metric,
        order=order,
        dataset=dataset,
        family=family,
        task=task,
        current=current,
        protocol_version=protocol,
        limit=limit,
        entries=rows,
        next_cursor=next_cursor,
    )


@compare_router.get(
    "",
    response_model=Comparison,
    responses={404: {"model": Message, "description": "names the unknown job ids"}, 401: {"model": Message}},
)
def compare_jobs(
    session: SessionDep,
    _principal: ReadAccess,
    jobs_: str = Query(..., alias="jobs", max_length=MAX_COMPARE * 40, description="comma-separated job ids"),
) -> Comparison:
    """The metrics of several jobs side by side: ``metrics[name][i]`` is job ``i``'s value (null if it has none;
    only succeeded jobs have metrics)."""
    return compare(session, jobs_)


def compare(session: Session, jobs_: str, min_jobs: int = 1, max_jobs: int = MAX_COMPARE) -> Comparison:
    """The ``/compare`` logic (shared with the web page): ``RequestValidationError`` for too few or too many ids,
    ``HTTPException(404)`` naming unknown ones."""
    ids = list(dict.fromkeys(part.strip() for part in jobs_.split(",") if part.strip()))
    if not ids:
        raise invalid_query("jobs", "give one or more comma-separated job ids", jobs_)
    if len(ids) < min_jobs:
        raise invalid_query("jobs", f"give at least {min_jobs} job ids", len(ids))
    if len(ids) > max_jobs:
        raise invalid_query("jobs", f"at most {max_jobs} jobs", len(ids))
    found = jobs.get_jobs(session, ids)
    unknown = [job_id for job_id in ids if job_id not in found]
    if unknown:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown job id(s): {', '.join(unknown)}")
    metrics = metrics_of(session, ids)
    names = sorted({name for values in metrics.values() for name in values})
    return Comparison(
        jobs=[
            CompareJob(
                job_id=job.id,
                name=job.name,
                status=job.status,
                dataset=job.dataset,
                family=job.family,
                task=job.task,
                hyper_parameters=hyper_parameters(job.spec),
                created_at=job.created_at,
                finished_at=job.finished_at,
            )
            for job in (found[job_id] for job_id in ids)
        ],
        metrics={name: [metrics[job_id].get(name) for job_id in ids] for name in names},
    )
