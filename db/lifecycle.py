"""A job's life after submission: every state change of a queued or running job goes through here.

Each function is one unit of work: it takes a :class:`~sqlalchemy.orm.Session`, does its reads/writes and commits.

Exactly-once execution does not come from the broker (Redis redelivers a long job after its visibility timeout; a
lost worker's message comes back): a worker runs a job only after :func:`claim_job` won it with one atomic
``UPDATE … WHERE status = 'queued' OR (status = 'running' AND lease_expires_at < now)``, and keeps it by renewing the
lease (:func:`renew_lease`). A second delivery of a job whose lease is alive is dropped; a job whose worker died is
taken over once its lease expires. Writes that finish a job (:func:`complete_job`, :func:`fail_job`) only apply
while the job is still ``running`` (and, if ``worker`` is given, still held by that worker).

Example::

    with session_scope() as s:
        job = jobs.create_job(s, spec)
    with session_scope() as s:
        if claim_job(s, job.id, worker="host:123", lease_seconds=60):
            ...
            complete_job(s, job.id, {"clean_acc": 0.98}, {"spec_hash": job.spec_hash})
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, or_, true, update
from sqlalchemy.orm import Session

from db.jobs import get_job
from db.models import Job, JobStatus, Result, utcnow

MAX_METRIC_NAME = 100
RETRYABLE_STATUSES = (JobStatus.failed.value, JobStatus.cancelled.value)


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by strings ("nan", "inf", "-inf") and tuples by lists, so that it
    can be stored in a JSON column on every backend (PostgreSQL rejects the ``NaN`` token)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if hasattr(value, "item"):  # numpy / torch scalars
        return json_safe(value.item())
    return str(value)


def _held_by(worker: str | None) -> ColumnElement[bool]:
    return Job.worker == worker if worker is not None else true()


def claim_job(session: Session, job_id: str, worker: str, lease_seconds: float) -> Job | None:
    """Atomically take ``job_id`` for ``worker``: a queued job, or a running one whose lease has expired.

    Returns:
        The claimed job (status ``running``, ``attempts`` incremented), or ``None`` when the job does not exist,
        is finished or cancelled, or another worker holds a live lease on it.
    """
    now = utcnow()
    claimable = or_(
        Job.status == JobStatus.queued.value,
        and_(Job.status == JobStatus.running.value, Job.lease_expires_at < now),
    )
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, claimable)
        .values(
            status=JobStatus.running.value,
            worker=worker,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=Job.attempts + 1,
            started_at=now,
            error=None,
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    if result.rowcount != 1:
        return None
    return get_job(session, job_id)


def renew_lease(session: Session, job_id: str, worker: str, lease_seconds: float) -> bool:
    """Extend ``worker``'s lease. ``False`` means the job is no longer this worker's to run (cancelled, or taken
    over after the lease expired): the worker should stop."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.running.value, Job.worker == worker)
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount == 1


def update_progress(session: Session, job_id: str, progress: Mapping[str, Any], worker: str | None = None) -> bool:
    """Store the latest progress report of a running job. Returns ``False`` if the job is not running (for
    ``worker``) any more."""
    payload = json_safe(dict(progress))
    payload["updated_at"] = utcnow().isoformat()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.running.value, _held_by(worker))
        .values(progress=payload)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount == 1


def complete_job(
    session: Session,
    job_id: str,
    metrics: Mapping[str, float],
    info: Mapping[str, Any] | None = None,
    worker: str | None = None,
) -> Job | None:
    """Store the metrics of a running job and mark it ``succeeded``, all in ONE transaction: either the results
    and the new status are both stored or neither is.

    Non-finite metric values (NaN, ±inf) are not stored as rows (they cannot be ranked); they are listed in
    ``info["nonfinite_metrics"]``.

    Returns:
        The finished job, or ``None`` if the job was not running (for ``worker``): e.g. already completed,
        cancelled, or taken over by another worker. Nothing is written then.

    Raises:
        ValueError: a metric name is empty or longer than 100 characters.
    """
    finite: dict[str, float] = {}
    nonfinite: dict[str, str] = {}
    for name, value in metrics.items():
        if not name or len(name) > MAX_METRIC_NAME:
            raise ValueError(f"invalid metric name {name!r} (1 to {MAX_METRIC_NAME} characters)")
        value = float(value)
        if math.isfinite(value):
            finite[name] = value
        else:
            nonfinite[name] = str(value)
    stored_info = json_safe(dict(info or {}))
    if nonfinite:
        stored_info["nonfinite_metrics"] = nonfinite
    now = utcnow()
    try:
        # The status change comes first: it takes the write lock (SQLite) / row lock (PostgreSQL) and decides
        # whether this call may write at all.
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.running.value, _held_by(worker))
            .values(
                status=JobStatus.succeeded.value,
                info=stored_info,
                finished_at=now,
                lease_expires_at=None,
                error=None,
                **_provenance_of(stored_info),
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            session.rollback()
            return None
        session.execute(delete(Result).where(Result.job_id == job_id))
        session.add_all(Result(job_id=job_id, name=name, value=value) for name, value in finite.items())
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return get_job(session, job_id)


def _provenance_of(info: Mapping[str, Any]) -> dict[str, Any]:
    """The job columns the worker's ``info`` sets: ``code_version`` from ``info["versions"]["robustlab"]`` (the code
    identity that produced the numbers), ``protocol_version`` from ``info["provenance"]`` (each kept as recorded at
    submission when absent) and ``weights_kept`` (``info["weights"]``: the stored weights' path)."""
    columns: dict[str, Any] = {"weights_kept": bool(info.get("weights"))}
    versions = info.get("versions")
    version = versions.get("robustlab") if isinstance(versions, Mapping) else None
    if version:
        columns["code_version"] = str(version)[:100]
    provenance = info.get("provenance")
    protocol = provenance.get("protocol_version") if isinstance(provenance, Mapping) else None
    if protocol:
        columns["protocol_version"] = str(protocol)[:255]
    return columns


def fail_job(session: Session, job_id: str, error: str, worker: str | None = None) -> Job | None:
    """Mark a queued or running job ``failed`` with ``error``. Returns ``None`` if it was already finished or is
    held by another worker."""
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.status.in_([JobStatus.queued.value, JobStatus.running.value]),
            _held_by(worker),
        )
        .values(status=JobStatus.failed.value, error=error, finished_at=utcnow(), lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return get_job(session, job_id) if result.rowcount == 1 else None


def cancel_job(session: Session, job_id: str) -> Job | None:
    """Cancel a queued or running job (a running job's worker notices at its next heartbeat and stops).
    Returns ``None`` if the job was already finished."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_([JobStatus.queued.value, JobStatus.running.value]))
        .values(status=JobStatus.cancelled.value, finished_at=utcnow(), lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return get_job(session, job_id) if result.rowcount == 1 else None


def retry_job(session: Session, job_id: str) -> Job | None:
    """Put a failed or cancelled job back to ``queued`` with a clean slate (attempts, error, progress, worker and
    timestamps reset), to be sent to the broker again. Returns ``None`` if the job is not failed or cancelled.

    A cancelled job's old worker, if it is still between two epochs, loses its lease renewal (the job is no longer
    ``running`` for it) and stops; the claim that runs the retry is a new one."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(RETRYABLE_STATUSES))
        .values(
            status=JobStatus.queued.value,
            attempts=0,
            error=None,
            progress=None,
            worker=None,
            lease_expires_at=None,
            started_at=None,
            finished_at=None,
            info=None,
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return get_job(session, job_id) if result.rowcount == 1 else None


__all__: Sequence[str] = [
    "cancel_job",
    "claim_job",
    "complete_job",
    "fail_job",
    "json_safe",
    "renew_lease",
    "retry_job",
    "update_progress",
]
