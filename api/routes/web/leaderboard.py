"""``GET /``: the leaderboard page — filters (a GET form), sortable metric columns, cursor pages, export links.

One page of :func:`api.routes.leaderboard.leaderboard_page`, the JSON API's query: the same rows in the same order.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import AfterValidator
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import SessionDep
from api.routes.leaderboard import METRIC_PATTERN, full_metric, invalid_query, leaderboard_page
from api.routes.web.base import PAGE_DEPENDENCIES, PageRoute, WebReader, link, render
from core import metrics
from core.protocol import changed_evaluations, current_protocol
from db.models import Job, JobStatus, Result

PAGE_SIZE = 25
MAX_PAGE_SIZE = 200
MAX_COLUMNS = 16  # metric columns on the page

router = APIRouter(route_class=PageRoute, dependencies=PAGE_DEPENDENCIES)


def metric_name(value: str) -> str:
    if not re.fullmatch(METRIC_PATTERN, value):
        raise ValueError(f"{value!r} is not a metric name (e.g. clean_acc, pgd_linf_acc@0.1)")
    return value


Filter = Annotated[str | None, Query(max_length=64)]


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


def _columns(options: list[str], metric: str) -> list[str]:
    """The ranking metric first, then the catalog's default columns among ``options`` (at most
    :data:`MAX_COLUMNS`, clean accuracy kept), in catalog order."""
    columns = [m for m in options if metrics.is_column(m) or m == metric]
    if len(columns) > MAX_COLUMNS:
        kept = [m for m in columns if m in (metric, "clean_acc")]
        columns = sorted(kept + [m for m in columns if m not in kept][: MAX_COLUMNS - 2], key=metrics.sort_key)
    return [metric] + [m for m in columns if m != metric]


@router.get("/", response_class=HTMLResponse, name="web_leaderboard")
def leaderboard(
    request: Request,
    session: SessionDep,
    _reader: WebReader,
    dataset: Filter = None,
    family: Filter = None,
    task: Filter = None,
    metric: Annotated[str, AfterValidator(metric_name), Query(max_length=100)] = "clean_acc",
    order: Literal["asc", "desc"] | None = Query(None, description="default: best first for the metric"),
    limit: int = Query(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE),
    cursor: str | None = Query(None, max_length=1000),
    current: bool = Query(False, description="only entries evaluated under the current protocol"),
) -> Response:
    """The leaderboard of succeeded jobs: one page of :func:`leaderboard_page`."""
    metric = full_metric(metric, None, None)
    order = order or metrics.default_order(metric)
    known = _metric_names(session)
    if metric not in known and metric != "clean_acc":
        examples = ", ".join(sorted(known, key=metrics.sort_key)[:12]) or "none yet"
        raise invalid_query("metric", f"Unknown metric {metric!r}. Metrics of finished jobs: {examples}.", metric)
    board = leaderboard_page(session, dataset, family, task, metric, None, None, order, limit, cursor, current)

    in_slice = _metric_names(session, dataset, family, task) if (dataset or family or task) else known
    options = sorted(in_slice | {metric}, key=metrics.sort_key)
    columns = _columns(options, metric)
    keep = {
        "dataset": dataset,
        "family": family,
        "task": task,
        "limit": limit if limit != PAGE_SIZE else None,
        "current": "true" if current else None,
    }
    sort_links = {
        m: link(request, "/", **keep, metric=m, order=(("asc" if order == "desc" else "desc") if m == metric
                                                      else metrics.default_order(m)))
        for m in columns
    }  # fmt: skip
    choices = _choices(session)
    context = {
        "board": board,
        "metric": metric,
        "order": order,
        "filters": {"dataset": dataset, "family": family, "task": task, "current": current},
        "protocol": current_protocol(),
        "changed": {e.job_id: changed_evaluations(e.protocol_version) for e in board.entries if e.stale},
        "limit": limit,
        "choices": choices,
        "show_task": len(choices["tasks"]) > 1 or bool(task),
        "metric_options": options,
        "columns": columns,
        "sort_links": sort_links,
        "next_link": link(request, "/", **keep, metric=metric, order=order, cursor=board.next_cursor)
        if board.next_cursor
        else None,
        "first_link": link(request, "/", **keep, metric=metric, order=order) if cursor else None,
        "export_links": {
            fmt: link(request, "/api/v1/leaderboard", **keep, metric=metric, order=order, cursor=cursor, format=fmt)
            for fmt in ("csv", "robustbench")
        },
    }
    return render(request, "leaderboard.html", context)
