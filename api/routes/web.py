"""Server-rendered web pages (Jinja2 templates in ``api/templates``, CSS in ``api/static``; no JavaScript).

::

    GET /                               the leaderboard: filters (a GET form), sortable metric columns, cursor pages
    GET /jobs/{id}                      one job: status and progress (refreshes itself while queued or running),
                                        metrics, the worker's PNG plots, the spec
    GET /jobs/{id}/plots/{file}.png     one of those plots, streamed from the job's artifacts directory
    GET /compare?jobs=a,b[,c[,d]]       2–4 jobs side by side, with overlaid curves
    GET /compare/plot.png?jobs=…&kind=  one overlay (kinds: :data:`api.web_plots.COMPARE_KINDS`), drawn on request
    GET|POST /login, POST /logout       keep an API key in an HttpOnly cookie (for ROBUSTLAB_PUBLIC_READ=false)

The pages read through the same functions as the JSON API (:func:`api.routes.leaderboard.leaderboard_page`,
:func:`api.routes.leaderboard.compare`, :mod:`db.jobs`) and follow the same read policy
(:func:`api.security.require`): open, public reads, or an API key, sent as ``Authorization: Bearer`` or kept in
the ``robustlab_key`` cookie by ``/login``. Errors are HTML pages: 404 for an unknown job, 422 for a bad query
(unknown metric, not 2–4 jobs, …), 401 with a key form when a key is needed. The router is mounted at the root,
outside ``/api/v1``, and left out of the OpenAPI schema (:func:`install`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import SessionDep, SettingsDep
from api.routes.jobs import _safe_file
from api.routes.leaderboard import METRIC_PATTERN, compare, full_metric, leaderboard_page
from api.schemas import Comparison, JobOut
from api.security import Credentials, Principal, authenticate, require
from api.web_plots import COLOURS_HEX, COMPARE_KINDS, compare_plot, has_data
from core import metrics
from core.families import hyper_parameters
from core.protocol import changed_evaluations, current_protocol
from db import jobs
from db.models import Job, JobStatus, Result
from db.reevaluation import reevaluation_blocker

HERE = Path(__file__).resolve().parents[1]
TEMPLATES = Jinja2Templates(directory=HERE / "templates")
STATIC_DIR = HERE / "static"
COOKIE = "robustlab_key"
COOKIE_MAX_AGE = 30 * 24 * 3600
PAGE_SIZE = 25
MAX_PAGE_SIZE = 200
MIN_COMPARE, MAX_COMPARE = 2, 4
MAX_COLUMNS = 16  # metric columns on the leaderboard page
TITLES = {401: "Key needed", 403: "Not allowed", 404: "Not found", 422: "Bad request", 429: "Too many requests"}

router = APIRouter(tags=["web"])


# ---------------------------------------------------------------------------------------------------- errors
class WebError(Exception):
    """Answered as an HTML error page (:func:`install` registers the handler)."""

    def __init__(self, status_code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = headers


def _error_page(request: Request, status_code: int, message: str, headers: dict[str, str] | None = None):
    context = {"status_code": status_code, "title": TITLES.get(status_code, "Error"), "message": message}
    context |= {"next": _safe_next(request.url.path + (f"?{request.url.query}" if request.url.query else ""))}
    return _render(request, "error.html", context, status_code=status_code, headers=headers)


async def web_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WebError)
    return _error_page(request, exc.status_code, exc.message, exc.headers)


def bad_request(message: str) -> WebError:
    return WebError(422, message)


def _validation_message(exc: RequestValidationError) -> str:
    return "; ".join(
        f"{error['loc'][-1]}: {error['msg']}" if error.get("loc") else str(error["msg"]) for error in exc.errors()
    )


# ---------------------------------------------------------------------------------------------------- access
_read_access = require("read")


async def web_reader(request: Request, settings: SettingsDep, credentials: Credentials) -> Principal:
    """The JSON API's read policy; the key may also come from the ``robustlab_key`` cookie."""
    if credentials is None and (token := request.cookies.get(COOKIE)):
        credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)
    try:
        return await _read_access(request, settings, credentials)
    except HTTPException as exc:
        raise WebError(exc.status_code, str(exc.detail), dict(exc.headers or {})) from None


WebReader = Annotated[Principal, Depends(web_reader)]


def _safe_next(target: str | None) -> str:
    """A local path to return to after /login (never another site: no scheme, no ``//host``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


# ---------------------------------------------------------------------------------------------------- helpers
def _render(request: Request, name: str, context: dict[str, Any], status_code: int = 200, headers=None):
    settings = request.app.state.settings
    root = request.scope.get("root_path", "")
    base = {
        "root": root,
        "auth": settings.auth,
        "logged_in": bool(request.cookies.get(COOKIE)),
        "fmt": metrics.format_value,
        "label": metrics.label,
    }
    return TEMPLATES.TemplateResponse(request, name, base | context, status_code=status_code, headers=headers)


def _query(request: Request) -> dict[str, str]:
    """The query's single values (the last of repeated ones), ``""`` for empty form fields; 422 on a NUL."""
    for key, value in request.query_params.multi_items():
        if "\x00" in key or "\x00" in value:
            raise bad_request("the query contains a NUL character")
    return dict(request.query_params)


def _text(query: dict[str, str], name: str, max_length: int = 64) -> str | None:
    value = query.get(name, "").strip()
    if len(value) > max_length:
        raise bad_request(f"{name}: at most {max_length} characters")
    return value or None


def _link(request: Request, path: str, **params: Any) -> str:
    """A root-relative link (works behind a proxy that does not forward its host): ``/?metric=…&order=…``."""
    query = urlencode({k: v for k, v in params.items() if v is not None and v != ""})
    return request.scope.get("root_path", "") + path + (f"?{query}" if query else "")


def _metric_names(session: Session, dataset=None, family=None, task=None) -> set[str]:
    """Metric names of succeeded jobs (only they have results), in the slice when filters are given."""
    stmt = select(Result.name).distinct()
    if dataset or family or task:
        stmt = stmt.join(Job, Job.id == Result.job_id).where(Job.status == JobStatus.succeeded.value)
        for column, value in ((Job.dataset, dataset), (Job.family, family), (Job.task, task)):
            if value:
                stmt = stmt.where(column == value)
    return set(session.scalars(stmt))


def _choices(session: Session) -> dict[str, list[str]]:
    rows = session.execute(
        select(Job.dataset, Job.family, Job.task).where(Job.status == JobStatus.succeeded.value).distinct()
    ).all()
    return {
        "datasets": sorted({r.dataset for r in rows}),
        "families": sorted({r.family for r in rows}),
        "tasks": sorted({r.task for r in rows}),
    }


def _job_or_404(session: Session, job_id: str) -> Job:
    job = None if len(job_id) > 64 or "\x00" in job_id else jobs.get_job(session, job_id)
    if job is None:
        raise WebError(404, f"There is no job {job_id!r}.")
    return job


def _job_label(name: str, job_id: str) -> str:
    return f"{name} ({job_id[:8]})"


def _compare_ids(query_values: list[str]) -> list[str]:
    """``?jobs=a,b`` or ``?jobs=a&jobs=b`` (the leaderboard's checkboxes) → ids, in order, once each; 422 unless
    there are 2 to 4."""
    ids = list(dict.fromkeys(p.strip() for value in query_values for p in value.split(",") if p.strip()))
    if not MIN_COMPARE <= len(ids) <= MAX_COMPARE:
        raise bad_request(f"Compare {MIN_COMPARE} to {MAX_COMPARE} jobs (got {len(ids)}): /compare?jobs=<id>,<id>")
    if any(len(i) > 64 or "\x00" in i for i in ids):
        raise bad_request("jobs: not job ids")
    return ids


def _comparison(session: Session, ids: list[str]) -> Comparison:
    try:
        return compare(session, ",".join(ids), min_jobs=MIN_COMPARE, max_jobs=MAX_COMPARE)
    except RequestValidationError as exc:
        raise bad_request(_validation_message(exc)) from None
    except HTTPException as exc:
        raise WebError(exc.status_code, str(exc.detail)) from None


# ---------------------------------------------------------------------------------------------------- pages
@router.get("/", response_class=HTMLResponse, name="web_leaderboard")
def leaderboard(request: Request, session: SessionDep, _reader: WebReader) -> Response:
    """The leaderboard of succeeded jobs: one page of :func:`leaderboard_page`."""
    query = _query(request)
    dataset, family, task = _text(query, "dataset"), _text(query, "family"), _text(query, "task")
    metric = _text(query, "metric", 100) or "clean_acc"
    cursor = _text(query, "cursor", 1000)
    order = query.get("order") or metrics.default_order(metric)
    if order not in ("asc", "desc"):
        raise bad_request(f"order: 'asc' or 'desc', not {order!r}")
    current = query.get("current", "").lower()
    if current not in ("", "true", "false"):
        raise bad_request(f"current: 'true' or 'false', not {query['current']!r}")
    current_only = current == "true"
    try:
        limit = int(query.get("limit") or PAGE_SIZE)
    except ValueError:
        raise bad_request(f"limit: a number of rows, not {query['limit']!r}") from None
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise bad_request(f"limit: 1 to {MAX_PAGE_SIZE} rows")
    if not re.fullmatch(METRIC_PATTERN, metric):
        raise bad_request(f"{metric!r} is not a metric name (e.g. clean_acc, pgd_linf_acc@0.1)")
    try:
        metric = full_metric(metric, None, None)
    except RequestValidationError as exc:
        raise bad_request(_validation_message(exc)) from None
    known = _metric_names(session)
    if metric not in known and metric != "clean_acc":
        examples = ", ".join(sorted(known, key=metrics.sort_key)[:12]) or "none yet"
        raise bad_request(f"Unknown metric {metric!r}. Metrics of finished jobs: {examples}.")
    try:
        board = leaderboard_page(
            session, dataset, family, task, metric, None, None, order, limit, cursor, current=current_only
        )
    except RequestValidationError as exc:
        raise bad_request(_validation_message(exc)) from None

    in_slice = _metric_names(session, dataset, family, task) if (dataset or family or task) else known
    options = sorted(in_slice | {metric}, key=metrics.sort_key)
    columns = [m for m in options if metrics.is_column(m) or m == metric]
    if len(columns) > MAX_COLUMNS:
        columns = [m for m in columns if m == metric or m == "clean_acc"] + [
            m for m in columns if m not in (metric, "clean_acc")
        ][: MAX_COLUMNS - 2]
        columns.sort(key=metrics.sort_key)
    columns = [metric] + [m for m in columns if m != metric]  # the ranking column first, then the others in order
    keep = {
        "dataset": dataset,
        "family": family,
        "task": task,
        "limit": limit if limit != PAGE_SIZE else None,
        "current": "true" if current_only else None,
    }
    sort_links = {
        m: _link(request, "/", **keep, metric=m, order=(("asc" if order == "desc" else "desc") if m == metric
                                                       else metrics.default_order(m)))
        for m in columns
    }  # fmt: skip
    choices = _choices(session)
    context = {
        "board": board,
        "metric": metric,
        "order": order,
        "filters": {"dataset": dataset, "family": family, "task": task, "current": current_only},
        "protocol": current_protocol(),
        "changed": {e.job_id: changed_evaluations(e.protocol_version) for e in board.entries if e.stale},
        "limit": limit,
        "choices": choices,
        "show_task": len(choices["tasks"]) > 1 or bool(task),
        "metric_options": options,
        "columns": columns,
        "sort_links": sort_links,
        "next_link": _link(request, "/", **keep, metric=metric, order=order, cursor=board.next_cursor)
        if board.next_cursor
        else None,
        "first_link": _link(request, "/", **keep, metric=metric, order=order) if cursor else None,
        "export_links": {
            fmt: _link(request, "/api/v1/leaderboard", **keep, metric=metric, order=order, cursor=cursor, format=fmt)
            for fmt in ("csv", "robustbench")
        },
    }
    return _render(request, "leaderboard.html", context)


@router.get("/jobs/{job_id}", response_class=HTMLResponse, name="web_job")
def job_page(job_id: str, request: Request, session: SessionDep, settings: SettingsDep, _reader: WebReader) -> Response:
    """One job: status, progress and ETA (the page reloads itself every 3 s while the job is queued or running),
    metrics, plots and the spec."""
    job = _job_or_404(session, job_id)
    out = JobOut.model_validate(job)
    job_metrics = jobs.get_metrics(session, job.id)
    base = (Path(settings.artifacts_dir) / job.id).resolve()
    plots = []
    if base.is_dir():
        found = sorted(p.name for p in base.glob("*.png") if _safe_file(base, p.name) is not None)
        known = list(metrics.PLOT_FILE.values())
        plots = [p for p in known if p in found] + [p for p in found if p not in known]
    info = job.info or {}
    context = {
        "job": out,
        "refresh": job.status in (JobStatus.queued.value, JobStatus.running.value),
        "progress": out.progress or {},
        "eta": _duration(out.eta_seconds),
        "metrics": sorted(job_metrics.items(), key=lambda item: metrics.sort_key(item[0])),
        "metric_notes": metrics.notes(job_metrics),
        "plots": [(name, _link(request, f"/jobs/{job.id}/plots/{name}")) for name in plots],
        "warnings": info.get("warnings") or [],
        "attacks": info.get("pgd") or {},
        "suite": info.get("autoattack") or {},
        "reliability": info.get("reliability"),
        "spec_json": _pretty(out.spec),
        "hyper_parameters": hyper_parameters(out.spec),
        "provenance": out.provenance or {},
        "changed": changed_evaluations(out.protocol_version) if out.stale else [],
        "reevaluation_blocker": reevaluation_blocker(job, settings.artifacts_dir) if out.stale else None,
    }
    return _render(request, "job.html", context, headers={"Cache-Control": "no-store"})


@router.get("/jobs/{job_id}/plots/{name}", name="web_job_plot")
def job_plot(job_id: str, name: str, session: SessionDep, settings: SettingsDep, _reader: WebReader) -> Response:
    """A PNG the worker wrote into the job's artifacts directory (no other file, nothing outside it)."""
    job = _job_or_404(session, job_id)
    target = _safe_file((Path(settings.artifacts_dir) / job.id).resolve(), name) if name.endswith(".png") else None
    if target is None:
        raise WebError(404, f"Job {job_id!r} has no plot {name!r}.")
    return FileResponse(target, media_type="image/png")


@router.get("/compare", response_class=HTMLResponse, name="web_compare")
def compare_page(request: Request, session: SessionDep, _reader: WebReader) -> Response:
    """2–4 jobs side by side (the ``/api/v1/compare`` logic) and their overlaid curves."""
    _query(request)
    ids = _compare_ids(request.query_params.getlist("jobs"))
    comparison = _comparison(session, ids)
    names = sorted(comparison.metrics, key=metrics.sort_key)
    rows = []
    for name in names:
        values = comparison.metrics[name]
        present = [v for v in values if v is not None]
        best = None
        if len(present) > 1 and len(set(present)) > 1 and not name.partition("@")[0].endswith("_std"):
            best = metrics.best(name, present)
        rows.append({"name": name, "cells": values, "best": best})
    hp_keys = list(dict.fromkeys(k for job in comparison.jobs for k in job.hyper_parameters))
    per_job = [{n: vals[i] for n, vals in comparison.metrics.items() if vals[i] is not None} for i in range(len(ids))]
    joined = ",".join(ids)
    plots = [
        (kind, COMPARE_KINDS[kind][1], _link(request, "/compare/plot.png", jobs=joined, kind=kind))
        for kind in COMPARE_KINDS
        if has_data(kind, per_job)
    ]
    context = {
        "comparison": comparison,
        "jobs": [
            {"job": job, "label": _job_label(job.name, job.job_id), "colour": COLOURS_HEX[i % len(COLOURS_HEX)]}
            for i, job in enumerate(comparison.jobs)
        ],
        "rows": rows,
        "hp_keys": hp_keys,
        "plots": plots,
    }
    return _render(request, "compare.html", context)


@router.get("/compare/plot.png", name="web_compare_plot")
def compare_plot_png(request: Request, session: SessionDep, _reader: WebReader) -> Response:
    """One overlay of the compare page, drawn from the stored metrics (matplotlib, Agg)."""
    query = _query(request)
    kind = query.get("kind", "")
    if kind not in COMPARE_KINDS:
        raise bad_request(f"kind: one of {', '.join(COMPARE_KINDS)}")
    ids = _compare_ids(request.query_params.getlist("jobs"))
    comparison = _comparison(session, ids)
    curves = [
        (_job_label(job.name, job.job_id), {n: v[i] for n, v in comparison.metrics.items() if v[i] is not None})
        for i, job in enumerate(comparison.jobs)
    ]
    png = compare_plot(kind, curves)
    if png is None:
        raise WebError(404, f"None of these jobs has {kind} metrics.")
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})


# ---------------------------------------------------------------------------------------------------- login
@router.get("/login", response_class=HTMLResponse, name="web_login")
def login_form(request: Request, next: str = "/") -> Response:
    return _render(request, "login.html", {"next": _safe_next(next), "message": None})


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request, session: SessionDep, key: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/"
) -> Response:
    """Check the key and keep it in an HttpOnly cookie, then go back to ``next``."""
    target = _safe_next(next)
    key = key.strip()
    if not key or "\x00" in key or authenticate(session, key) is None:
        context = {"next": target, "message": "That key is not valid (or was revoked)."}
        return _render(request, "login.html", context, status_code=401)
    response = RedirectResponse(request.scope.get("root_path", "") + target, status_code=303)
    response.set_cookie(
        COOKIE,
        key,
        max_age=COOKIE_MAX_AGE,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    response = RedirectResponse(request.scope.get("root_path", "") + "/", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


# ---------------------------------------------------------------------------------------------------- misc
def _duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def install(app: FastAPI) -> None:
    """Mount the pages at the root (outside the OpenAPI schema), ``/static``, and the HTML error handler."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(router, include_in_schema=False)
    app.add_exception_handler(WebError, web_error)


__all__ = ["WebError", "install", "router"]
