"""The leaderboard read model: succeeded jobs ranked by one metric, each row one :class:`LeaderboardEntry`.

The entry is the one row type of the leaderboard: the query builds it (:func:`leaderboard`), the JSON API sends it
(``GET /api/v1/leaderboard``, its OpenAPI schema), the web page renders it and the CSV / RobustBench exports
(:mod:`api.exports`) read it::

    with read_connection() as connection:      # or a Session
        rows = leaderboard(connection, dataset="spirals", metric="pgd_linf_acc@0.1", limit=20)
    rows[0].rank, rows[0].value, rows[0].pgd_linf_acc["0.1"], rows[0].stale

Ranking is by keyset on ``results (name, value, job_id)``: ``after`` (the last row's ``(value, job_id)``)
continues a ranking where a page stopped. The metric facts (which kinds are grouped per level, which are scalars)
come from the catalog, :mod:`core.metrics`; the key hyper-parameters from :func:`core.families.hyper_parameters`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field
from sqlalchemy import Connection, Double, Integer, Row, Select, String, bindparam, func, select, tuple_
from sqlalchemy.orm import Session
from typing_extensions import TypedDict

from core.families import hyper_parameters
from core.metrics import LEVEL_KINDS, SCALAR_KINDS, group_levels
from core.protocol import current_protocol
from db.models import Job, JobStatus, Result


class ReliabilityFlag(TypedDict):
    flag: Annotated[str, Field(description="e.g. cheap_attack_only, cheap_attack_overstates, black_box_beats_gradient")]
    reason: str


def _levels(description: str) -> Any:
    return Field(default_factory=dict, description=description)


class LeaderboardEntry(BaseModel):
    """One ranked succeeded job: its name, key hyper-parameters, the value of the ranking metric, its summary
    metrics grouped by level (gaussian_acc["0.1"]), all its metrics, and where its numbers come from."""

    # built only by leaderboard() (the grouped kinds are core.metrics.LEVEL_KINDS; its docstring is the OpenAPI's)

    rank: int
    job_id: str
    name: str = Field(description="the job's (model's) name")
    dataset: str
    family: str
    task: str
    width: int | None = None
    depth: int | None = None
    theta: float | None = None
    h: float | None = None
    hyper_parameters: dict[str, Any] = Field(
        default_factory=dict, description="width, depth, theta, h, hidden, activation, epochs, lr, optimizer, …"
    )
    value: float = Field(description="the value of the ranking metric")
    clean_acc: float | None = None
    gaussian_acc: dict[str, float] = _levels("σ → accuracy under Gaussian noise")
    robust_linf_acc: dict[str, float] = _levels(
        "ε → best-known robust accuracy (L∞): per sample, the minimum over every attack that ran"
    )
    robust_l2_acc: dict[str, float] = _levels("ε → best-known robust accuracy (L2): the headline")
    pgd_linf_acc: dict[str, float] = _levels("ε → accuracy under PGD (L∞)")
    pgd_l2_acc: dict[str, float] = _levels("ε → accuracy under PGD (L2)")
    autoattack_linf_acc: dict[str, float] = _levels("ε → accuracy under the strong attack suite (L∞)")
    autoattack_l2_acc: dict[str, float] = _levels("ε → accuracy under the strong attack suite (L2)")
    certified_l2_acc: dict[str, float] = _levels("ε → certified L2 accuracy")
    # regression and denoising (empty / null for classification)
    clean_mse: float | None = Field(None, description="regression, denoising: test MSE")
    clean_psnr: float | None = Field(None, description="regression, denoising: test PSNR (dB)")
    gaussian_mse: dict[str, float] = _levels("σ → MSE under Gaussian noise")
    gaussian_psnr: dict[str, float] = _levels("σ → PSNR (dB) under Gaussian noise")
    pgd_linf_mse: dict[str, float] = _levels("ε → worst MSE found by PGD (L∞; a lower bound on the worst case)")
    pgd_l2_mse: dict[str, float] = _levels("ε → worst MSE found by PGD (L2; a lower bound on the worst case)")
    certified_linf_mse: dict[str, float] = _levels("ε → certified upper bound on the worst-case MSE (L∞ ball)")
    certified_l2_mse: dict[str, float] = _levels("ε → certified upper bound on the worst-case MSE (L2 ball)")
    metrics: dict[str, float]
    created_at: datetime
    finished_at: datetime | None = None
    code_version: str | None = Field(None, description="code identity that produced the numbers")
    protocol_version: str | None = Field(None, description="evaluation protocol the numbers come from")
    stale: bool = Field(False, description="evaluated under another protocol than the current one")
    reevaluation_of: str | None = Field(None, description="a re-evaluation: the job whose weights it evaluated")
    weights_kept: bool = Field(False, description="weights kept: the entry can be re-evaluated")
    flags: list[ReliabilityFlag] = Field(
        default_factory=list, description="reliability flags of the job's robust accuracy, each with its reason"
    )


#: the entry's fields that hold a catalog kind: grouped by level, or the scalar itself
ENTRY_KINDS = tuple(name for name in LeaderboardEntry.model_fields if name in LEVEL_KINDS + SCALAR_KINDS)


def _entry(rank: int, job: Row, metrics: dict[str, float], flags: list) -> LeaderboardEntry:
    hp = hyper_parameters(job.spec)
    grouped = group_levels(metrics, LEVEL_KINDS)
    kinds = {kind: metrics.get(kind) if kind in SCALAR_KINDS else grouped.get(kind, {}) for kind in ENTRY_KINDS}
    return LeaderboardEntry.model_validate(
        {
            "rank": rank,
            "job_id": job.id,
            "name": job.name,
            "dataset": job.dataset,
            "family": job.family,
            "task": job.task,
            **{key: hp[key] for key in ("width", "depth", "theta", "h")},
            "hyper_parameters": hp,
            "value": job.value,
            **kinds,
            "metrics": metrics,
            "created_at": job.created_at,
            "finished_at": job.finished_at,
            "code_version": job.code_version,
            "protocol_version": job.protocol_version,
            "stale": job.protocol_version != current_protocol(),
            "reevaluation_of": job.reevaluation_of,
            "weights_kept": bool(job.weights_kept),
            "flags": flags,
        }
    )


@functools.lru_cache(maxsize=64)
def _leaderboard_statement(
    on_postgresql: bool, dataset: bool, family: bool, task: bool, descending: bool, paged: bool, protocol: bool = False
) -> Select:
    """The ranking query for one shape of request (which filters are given, the direction, whether it continues
    after a cursor), with bound parameters ``metric``, ``dataset``, ``family``, ``task``, ``protocol_version``,
    ``after_value``, ``after_id`` and ``limit``. Built once per shape: the same statement object is executed again,
    so SQLAlchemy finds its compiled SQL from the memoized cache key instead of rebuilding and re-hashing the
    expression on each request. Plain Core columns, not ORM entities."""
    jobs_t, results_t = Job.__table__, Result.__table__
    conditions = [results_t.c.name == bindparam("metric"), jobs_t.c.status == JobStatus.succeeded.value]
    filters = (dataset, jobs_t.c.dataset), (family, jobs_t.c.family), (task, jobs_t.c.task)
    for given, column in (*filters, (protocol, jobs_t.c.protocol_version)):
        if given:
            conditions.append(column == bindparam(column.name))
    key = tuple_(results_t.c.value, results_t.c.job_id)
    if paged:
        after = tuple_(bindparam("after_value", type_=Double), bindparam("after_id", type_=String))
        conditions.append(key < after if descending else key > after)
    direction = "desc" if descending else "asc"
    order = [getattr(results_t.c.value, direction)(), getattr(results_t.c.job_id, direction)()]
    columns = [
        jobs_t.c.id, jobs_t.c.name, jobs_t.c.dataset, jobs_t.c.family, jobs_t.c.task, jobs_t.c.created_at,
        jobs_t.c.finished_at, jobs_t.c.spec, results_t.c.value, jobs_t.c.code_version, jobs_t.c.protocol_version,
        jobs_t.c.reevaluation_of, jobs_t.c.weights_kept,
    ]  # fmt: skip
    if on_postgresql:  # each ranked job's metrics in the same query (one round trip less per page)
        other = results_t.alias("other")
        all_of_job = select(func.json_object_agg(other.c.name, other.c.value)).where(other.c.job_id == jobs_t.c.id)
        columns.append(all_of_job.correlate(jobs_t).scalar_subquery().label("all_metrics"))
    return (
        select(*columns)
        .select_from(jobs_t.join(results_t, results_t.c.job_id == jobs_t.c.id))
        .where(*conditions)
        .order_by(*order)
        .limit(bindparam("limit", type_=Integer))
    )


def leaderboard(
    session: Session | Connection,
    dataset: str | None = None,
    family: str | None = None,
    task: str | None = None,
    metric: str = "clean_acc",
    limit: int = 20,
    descending: bool = True,
    after: tuple[float, str] | None = None,
    first_rank: int = 1,
    protocol_version: str | None = None,
) -> list[LeaderboardEntry]:
    """Succeeded jobs ranked by ``metric`` (best first: highest when ``descending``), with the key
    hyper-parameters of their spec and all their metrics.

    Ties are broken by job id (in the same direction), so ``(value, job_id)`` orders the rows totally and
    ``after`` — the ``(value, job_id)`` of the last row of the previous page — continues the ranking exactly where
    it stopped (keyset pagination: no row is skipped or repeated, and each page is one index range scan on
    ``results (name, value, job_id)`` whatever its depth). ``first_rank`` is the rank of the page's first row.
    ``session`` may be a plain connection (:func:`db.session.read_connection`): the query is Core, not ORM.
    ``protocol_version``: only jobs evaluated under this protocol (the current one: ``?current=true``).
    """
    connection = session.connection() if isinstance(session, Session) else session
    on_postgresql = connection.dialect.name == "postgresql"
    statement = _leaderboard_statement(
        on_postgresql,
        dataset is not None,
        family is not None,
        task is not None,
        descending,
        after is not None,
        protocol_version is not None,
    )
    parameters: dict[str, Any] = {"metric": metric, "limit": limit}
    filters = ("dataset", dataset), ("family", family), ("task", task), ("protocol_version", protocol_version)
    parameters.update((k, v) for k, v in filters if v is not None)
    if after is not None:
        parameters["after_value"], parameters["after_id"] = after
    ranked = connection.execute(statement, parameters).all()
    if on_postgresql:  # json_object_agg's numbers come back as int when integral: the metrics are floats
        all_metrics = {job.id: {k: float(v) for k, v in sorted((job.all_metrics or {}).items())} for job in ranked}
    else:  # SQLite's JSON renders floats with 15 digits: read them as REALs instead
        all_metrics = metrics_of(connection, [job.id for job in ranked])
    # the reliability flags live in the job's info; only jobs with flags (metric reliability_flags > 0) are read
    flagged = [job.id for job in ranked if all_metrics[job.id].get("reliability_flags", 0.0) > 0]
    flags = reliability_flags_of(connection, flagged)
    return [
        _entry(rank, job, all_metrics[job.id], flags.get(job.id, []))
        for rank, job in enumerate(ranked, start=first_rank)
    ]


def reliability_flags_of(session: Session | Connection, job_ids: Sequence[str]) -> dict[str, list[dict[str, str]]]:
    """``{job id: [{"flag", "reason"}, …]}``: the reliability flags the worker stored in each job's info."""
    if not job_ids:
        return {}
    rows = session.execute(select(Job.id, Job.info).where(Job.id.in_(list(job_ids))))
    return {job_id: list(((info or {}).get("reliability") or {}).get("flags") or []) for job_id, info in rows}


def metrics_of(session: Session | Connection, job_ids: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{job id: {metric: value}}`` (names sorted) for ``job_ids``, in one query."""
    out: dict[str, dict[str, float]] = {job_id: {} for job_id in job_ids}
    if job_ids:
        rows = session.execute(
            select(Result.job_id, Result.name, Result.value)
            .where(Result.job_id.in_(list(job_ids)))
            .order_by(Result.job_id, Result.name)
        )
        for job_id, name, value in rows:
            out[job_id][name] = value
    return out


__all__ = ["ENTRY_KINDS", "LeaderboardEntry", "ReliabilityFlag", "leaderboard", "metrics_of", "reliability_flags_of"]
