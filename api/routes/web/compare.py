"""``GET /compare?jobs=a,b[,c[,d]]``: 2–4 jobs side by side (the ``/api/v1/compare`` logic) with overlaid curves;
``GET /compare/plot.png?jobs=…&kind=…``: one overlay (kinds: :data:`api.web_plots.COMPARE_KINDS`), drawn on
request."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import AfterValidator

from api.deps import SessionDep
from api.routes.leaderboard import compare
from api.routes.web.base import PAGE_DEPENDENCIES, PageRoute, WebReader, link, render
from api.web_plots import COLOURS_HEX, COMPARE_KINDS, compare_plot, has_data
from core import metrics

MIN_COMPARE, MAX_COMPARE = 2, 4

router = APIRouter(route_class=PageRoute, dependencies=PAGE_DEPENDENCIES)


def compare_ids(values: list[str]) -> list[str]:
    """``?jobs=a,b`` or ``?jobs=a&jobs=b`` (the leaderboard's checkboxes) → ids, in order, once each; 2 to 4."""
    ids = list(dict.fromkeys(p.strip() for value in values for p in value.split(",") if p.strip()))
    if not MIN_COMPARE <= len(ids) <= MAX_COMPARE:
        raise ValueError(f"Compare {MIN_COMPARE} to {MAX_COMPARE} jobs (got {len(ids)}): /compare?jobs=<id>,<id>")
    if any(len(i) > 64 for i in ids):
        raise ValueError("not job ids")
    return ids


JobIds = Annotated[list[str], AfterValidator(compare_ids), Query(validate_default=True)]
CompareKind = Literal[tuple(COMPARE_KINDS)]  # type: ignore[valid-type]


def _job_label(name: str, job_id: str) -> str:
    return f"{name} ({job_id[:8]})"


@router.get("/compare", response_class=HTMLResponse, name="web_compare")
def compare_page(request: Request, session: SessionDep, _reader: WebReader, jobs: JobIds = []) -> Response:  # noqa: B006
    """2–4 jobs side by side (the ``/api/v1/compare`` logic) and their overlaid curves."""
    comparison = compare(session, ",".join(jobs), min_jobs=MIN_COMPARE, max_jobs=MAX_COMPARE)
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
    per_job = [{n: vals[i] for n, vals in comparison.metrics.items() if vals[i] is not None} for i in range(len(jobs))]
    joined = ",".join(jobs)
    plots = [
        (kind, record.chart.title, link(request, "/compare/plot.png", jobs=joined, kind=kind))
        for kind, record in COMPARE_KINDS.items()
        if record.chart and has_data(kind, per_job)
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
    return render(request, "compare.html", context)


@router.get("/compare/plot.png", name="web_compare_plot")
def compare_plot_png(session: SessionDep, _reader: WebReader, kind: CompareKind, jobs: JobIds = []) -> Response:  # noqa: B006
    """One overlay of the compare page, drawn from the stored metrics (matplotlib, Agg)."""
    comparison = compare(session, ",".join(jobs), min_jobs=MIN_COMPARE, max_jobs=MAX_COMPARE)
    curves = [
        (_job_label(job.name, job.job_id), {n: v[i] for n, v in comparison.metrics.items() if v[i] is not None})
        for i, job in enumerate(comparison.jobs)
    ]
    png = compare_plot(kind, curves)
    if png is None:
        raise HTTPException(404, f"None of these jobs has {kind} metrics.")
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})
