"""``/leaderboard``: succeeded jobs ranked by any metric, filtered and paginated; ``/compare``: jobs side by side.

::

    GET /api/v1/leaderboard?dataset=spirals&metric=pgd_linf_acc&eps=0.1&order=desc&limit=20
    GET /api/v1/leaderboard?…same filters…&cursor=<next_cursor of the previous page>
    GET /api/v1/compare?jobs=<id>,<id>,<id>

Pages are cut by keyset pagination on ``(value, job id)`` (:func:`db.jobs.leaderboard`): the cursor is an opaque
token holding the last row's key, the next rank and a fingerprint of the query, so it is only valid with the same
filters, and a page is as fast on page 500 as on page 1.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Literal

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.exceptions import RequestValidationError

from api.deps import SessionDep
from api.schemas import CompareJob, Comparison, Leaderboard, LeaderboardEntry, Message
from api.security import ReadAccess
from db import jobs
from evaluation.spec import metric_key

router = APIRouter(prefix="/leaderboard", tags=["leaderboard"])
compare_router = APIRouter(prefix="/compare", tags=["leaderboard"])

METRIC_PATTERN = r"^[A-Za-z0-9_]+(@[0-9.eE+-]+)?$"
MAX_COMPARE = 50


def _invalid(location: str, message: str, value: object = None) -> RequestValidationError:
    return RequestValidationError([{"loc": ("query", location), "msg": message, "type": "value_error", "input": value}])


def full_metric(metric: str, eps: float | None, sigma: float | None) -> str:
    """``metric`` with its level: ``pgd_linf_acc`` + ``eps=0.1`` → ``pgd_linf_acc@0.1``; ``gaussian_acc@0.30`` →
    ``gaussian_acc@0.3`` (levels are written as the runner writes them)."""
    if eps is not None and sigma is not None:
        raise _invalid("sigma", "give eps or sigma, not both", sigma)
    level = eps if eps is not None else sigma
    kind, at, written = metric.partition("@")
    if at:
        try:
            parsed = float(written)
        except ValueError:
            raise _invalid("metric", f"{written!r} after '@' is not a number", metric) from None
        if level is not None and metric_key(kind, level) != metric_key(kind, parsed):
            raise _invalid("eps" if eps is not None else "sigma", f"contradicts the level in metric {metric!r}", level)
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
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise _invalid("cursor", "not a cursor of this API (pass next_cursor back unchanged)", cursor) from None
    if query != fingerprint:
        raise _invalid("cursor", "this cursor belongs to a query with other filters, metric or order", cursor)
    return after, rank


@router.get(
    "",
    response_model=Leaderboard,
    responses={401: {"model": Message}, 429: {"model": Message}},
)
def get_leaderboard(
    session: SessionDep,
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
) -> Leaderboard:
    """Best first: highest ``metric`` with ``order=desc`` (accuracies), lowest with ``order=asc`` (e.g.
    ``lipschitz_bound``, ``train_seconds``). Each entry has the job's name, family, key hyper-parameters, its
    clean / Gaussian / PGD / certified accuracies, all its metrics, job id and dates. ``next_cursor`` pages on."""
    metric = full_metric(metric, eps, sigma)
    fingerprint = _fingerprint(metric, order, dataset, family, task)
    after, first_rank = decode_cursor(cursor, fingerprint) if cursor else (None, 1)
    rows = jobs.leaderboard(
        session,
        dataset=dataset,
        family=family,
        task=task,
        metric=metric,
        limit=limit + 1,  # one more: is there a next page?
        descending=order == "desc",
        after=after,
        first_rank=first_rank,
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
        limit=limit,
        entries=[LeaderboardEntry.model_validate(row) for row in rows],
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
    ids = list(dict.fromkeys(part.strip() for part in jobs_.split(",") if part.strip()))
    if not ids:
        raise _invalid("jobs", "give one or more comma-separated job ids", jobs_)
    if len(ids) > MAX_COMPARE:
        raise _invalid("jobs", f"at most {MAX_COMPARE} jobs", len(ids))
    found = jobs.get_jobs(session, ids)
    unknown = [job_id for job_id in ids if job_id not in found]
    if unknown:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown job id(s): {', '.join(unknown)}")
    metrics = jobs.metrics_of(session, ids)
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
                hyper_parameters=jobs.hyper_parameters(job.spec),
                created_at=job.created_at,
                finished_at=job.finished_at,
            )
            for job in (found[job_id] for job_id in ids)
        ],
        metrics={name: [metrics[job_id].get(name) for job_id in ids] for name in names},
    )
