"""Repository functions for jobs and results: every state change of a job goes through here.

Each function is one unit of work: it takes a :class:`~sqlalchemy.orm.Session`, does its reads/writes and commits.

Exactly-once execution does not come from the broker (Redis redelivers a long job after its visibility timeout; a
lost worker's message comes back): a worker runs a job only after :func:`claim_job` won it with one atomic
``UPDATE … WHERE status = 'queued' OR (status = 'running' AND lease_expires_at < now)``, and keeps it by renewing the
lease (:func:`renew_lease`). A second delivery of a job whose lease is alive is dropped; a job whose worker died is
taken over once its lease expires. Writes that finish a job (:func:`complete_job`, :func:`fail_job`) only apply
while the job is still ``running`` (and, if ``worker`` is given, still held by that worker).

Example::

    with session_scope() as s:
        job = create_job(s, spec)
    with session_scope() as s:
        if claim_job(s, job.id, worker="host:123", lease_seconds=60):
            ...
            complete_job(s, job.id, {"clean_acc": 0.98}, {"spec_hash": job.spec_hash})
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    delete,
    exists,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from core.spec import JobSpec
from db.models import TERMINAL_STATUSES, IdempotencyKey, Job, JobStatus, Result, utcnow

MAX_METRIC_NAME = 100


# ---------------------------------------------------------------------------------------------------- helpers
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


# ---------------------------------------------------------------------------------------------------- create/read
def _new_job(
    spec: JobSpec,
    code_version: str | None = None,
    protocol_version: str | None = None,
    reevaluation_of: str | None = None,
) -> Job:
    return Job(
        id=str(uuid.uuid4()),
        name=spec.name,
        dataset=spec.dataset.name,
        family=spec.model.family,
        task=spec.task,
        spec=spec.model_dump(mode="json"),
        spec_hash=spec.spec_hash(),
        status=JobStatus.queued.value,
        attempts=0,
        created_at=utcnow(),
        code_version=code_version,
        protocol_version=protocol_version,
        reevaluation_of=reevaluation_of,
    )


def create_job(
    session: Session, spec: JobSpec, code_version: str | None = None, protocol_version: str | None = None
) -> Job:
    """Store a new ``queued`` job for ``spec`` and return it."""
    job = _new_job(spec, code_version, protocol_version)
    session.add(job)
    session.commit()
    return job


def find_idempotent(session: Session, owner: str, key: str) -> IdempotencyKey | None:
    """The stored ``Idempotency-Key`` ``key`` of ``owner`` (API key name; ``""`` when auth is open)."""
    return session.scalar(select(IdempotencyKey).where(IdempotencyKey.owner == owner, IdempotencyKey.key == key))


def find_succeeded_duplicate(
    session: Session, spec_hash: str, code_version: str | None, protocol_version: str | None = None
) -> Job | None:
    """The latest succeeded job with the same spec hash, code identity and evaluation protocol version: submitting
    the spec again would only reproduce its numbers (the runs are seeded). A job trained by other code, or evaluated
    under another protocol, is never returned (the API always passes both; jobs stored before protocol versions
    were recorded have none, so they are never reused by a submission through the API)."""
    return session.scalar(
        select(Job)
        .where(
            Job.spec_hash == spec_hash,
            Job.code_version == code_version,
            Job.protocol_version == protocol_version,
            Job.status == JobStatus.succeeded.value,
        )
        .order_by(Job.finished_at.desc(), Job.id)
        .limit(1)
        .execution_options(populate_existing=True)
    )


class IdempotencyConflict(Exception):
    """An ``Idempotency-Key`` was reused with a different request."""


def submit_job(
    session: Session,
    spec: JobSpec,
    *,
    code_version: str | None = None,
    protocol_version: str | None = None,
    idempotency_key: str | None = None,
    owner: str = "",
    reuse_succeeded: bool = True,
) -> tuple[Job, str | None]:
    """Create a job for ``spec``, unless an earlier submission answers it.

    * ``idempotency_key``: the job an earlier request with the same key (and owner) got is returned; the key and
      the new job are inserted in one transaction, and a concurrent request with the same key loses on the unique
      constraint ``(owner, key)`` and returns the winner's job.
    * ``reuse_succeeded``: a succeeded job with the same spec hash, code identity and protocol version is returned
      instead of running the same seeded computation again (:func:`find_succeeded_duplicate`).

    Returns:
        ``(job, reused)``: ``reused`` is ``None`` for a new job, else why an earlier job was returned:
        ``"idempotency-key"`` or ``"succeeded-job"``.

    Raises:
        IdempotencyConflict: the key was used before with a different spec.
    """
    spec_hash = spec.spec_hash()
    if idempotency_key is not None:
        earlier = find_idempotent(session, owner, idempotency_key)
        if earlier is not None:
            return _idempotent_job(session, earlier, spec_hash), "idempotency-key"
    existing = find_succeeded_duplicate(session, spec_hash, code_version, protocol_version) if reuse_succeeded else None
    job = existing or _new_job(spec, code_version, protocol_version)
    try:
        if existing is None:
            session.add(job)
            session.flush()
        if idempotency_key is not None:
            session.add(IdempotencyKey(owner=owner, key=idempotency_key, request_hash=spec_hash, job_id=job.id))
        session.commit()
    except IntegrityError:
        session.rollback()
        if idempotency_key is None:
            raise
        earlier = find_idempotent(session, owner, idempotency_key)
        if earlier is None:
            raise
        return _idempotent_job(session, earlier, spec_hash), "idempotency-key"
    return job, None if existing is None else "succeeded-job"


def _idempotent_job(session: Session, earlier: IdempotencyKey, spec_hash: str) -> Job:
    if earlier.request_hash != spec_hash:
        raise IdempotencyConflict(
            f"Idempotency-Key {earlier.key!r} was used for a different spec (job {earlier.job_id}); use a new key"
        )
    job = get_job(session, earlier.job_id)
    assert job is not None  # the foreign key cascades deletes
    return job


def get_job(session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id, populate_existing=True)


def list_jobs(
    session: Session,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
    *,
    dataset: str | None = None,
    family: str | None = None,
    stale_against: str | None = None,
) -> tuple[list[Job], int]:
    """Jobs, newest first, and the total number matching the filters. ``stale_against``: only succeeded jobs
    evaluated under another protocol version than this one (or under none recorded) that no succeeded
    re-evaluation has superseded yet: the newest link of each chain of re-evaluations, what to re-evaluate next."""
    conditions = []
    if status is not None:
        conditions.append(Job.status == status)
    if stale_against is not None:
        later = aliased(Job)
        superseded = exists().where(later.reevaluation_of == Job.id, later.status == JobStatus.succeeded.value)
        conditions.append(Job.status == JobStatus.succeeded.value)
        conditions.append(or_(Job.protocol_version.is_(None), Job.protocol_version != stale_against))
        conditions.append(~superseded)
    if dataset is not None:
        conditions.append(Job.dataset == dataset)
    if family is not None:
        conditions.append(Job.family == family)
    total = session.scalar(select(func.count()).select_from(Job).where(*conditions)) or 0
    rows = session.scalars(
        select(Job)
        .where(*conditions)
        .order_by(Job.created_at.desc(), Job.id)
        .limit(limit)
        .offset(offset)
        .execution_options(populate_existing=True)
    ).all()
    return list(rows), total


def get_metrics(session: Session, job_id: str) -> dict[str, float]:
    rows = session.execute(select(Result.name, Result.value).where(Result.job_id == job_id).order_by(Result.name))
    return {name: value for name, value in rows}


# ---------------------------------------------------------------------------------------------------- lifecycle
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


RETRYABLE_STATUSES = (JobStatus.failed.value, JobStatus.cancelled.value)


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


def recover_orphans(session: Session, max_attempts: int) -> tuple[list[Job], list[Job]]:
    """Jobs whose worker was lost (status ``running``, lease expired): put those with attempts left back to
    ``queued`` (to be re-dispatched), fail the others.

    Returns:
        ``(requeued, failed)``.
    """
    now = utcnow()
    expired = and_(Job.status == JobStatus.running.value, Job.lease_expires_at < now)
    gave_up = session.scalars(
        update(Job)
        .where(expired, Job.attempts >= max_attempts)
        .values(
            status=JobStatus.failed.value,
            error=f"WorkerLost: the job's worker stopped renewing its lease {max_attempts} time(s); not retried",
            finished_at=now,
            lease_expires_at=None,
        )
        .returning(Job)
        .execution_options(synchronize_session=False, populate_existing=True)
    ).all()
    requeued = session.scalars(
        update(Job)
        .where(expired, Job.attempts < max_attempts)
        .values(status=JobStatus.queued.value, worker=None, lease_expires_at=None, redispatch_at=now)  # due now
        .returning(Job)
        .execution_options(synchronize_session=False, populate_existing=True)
    ).all()
    session.commit()
    return list(requeued), list(gave_up)


def claim_redispatch(
    session: Session,
    after: float,
    max_interval: float,
    *,
    everything: bool = False,
    now: datetime | None = None,
    limit: int = 1000,
) -> list[Job]:
    """Queued jobs to send to the broker again (it may have lost them: Redis keeps nothing on disk), each pushed
    back to its next re-send time in the same transaction.

    A queued job is due when its ``redispatch_at`` has passed (``NULL``: ``after`` seconds after ``created_at``);
    :func:`recover_orphans` makes a requeued job due at once. With ``everything`` every queued job is due (the API's
    start-up: the broker may have restarted too). The next re-send is ``clamp(age, after, max_interval)`` seconds
    later, ``age`` counted from ``created_at``: a job that merely waits in a long queue is re-sent at ages of about
    ``after``, ``2·after``, ``4·after`` … and then every ``max_interval`` — a few duplicate messages, which the
    worker's claim drops — never once per sweep.

    Each job is taken by a conditional ``UPDATE`` on the ``redispatch_at`` it was read with, so of several sweepers
    (API processes) exactly one re-sends it.

    Returns:
        The jobs to send, oldest first.
    """
    now = now or utcnow()
    conditions: list[ColumnElement[bool]] = [Job.status == JobStatus.queued.value]
    if not everything:
        conditions.append(
            or_(
                Job.redispatch_at <= now,
                and_(Job.redispatch_at.is_(None), Job.created_at <= now - timedelta(seconds=after)),
            )
        )
    candidates = session.execute(
        select(Job.id, Job.created_at, Job.redispatch_at).where(*conditions).order_by(Job.created_at).limit(limit)
    ).all()
    taken = []
    for job_id, created_at, previous in candidates:
        backoff = min(max((now - created_at).total_seconds(), after), max_interval)
        result = session.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.status == JobStatus.queued.value,
                Job.redispatch_at.is_not_distinct_from(previous),
            )
            .values(redispatch_at=now + timedelta(seconds=backoff))
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            taken.append(job_id)
    session.commit()
    if not taken:
        return []
    return list(
        session.scalars(
            select(Job).where(Job.id.in_(taken)).order_by(Job.created_at).execution_options(populate_existing=True)
        ).all()
    )


def release_redispatch(session: Session, job_ids: Sequence[str]) -> None:
    """Make queued jobs due for re-sending at the next sweep (the broker refused the ones
    :func:`claim_redispatch` handed out)."""
    if job_ids:
        session.execute(
            update(Job)
            .where(Job.id.in_(list(job_ids)), Job.status == JobStatus.queued.value)
            .values(redispatch_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    session.commit()


# ---------------------------------------------------------------------------------------------------- read
def get_jobs(session: Session, job_ids: Sequence[str]) -> dict[str, Job]:
    """The jobs among ``job_ids`` that exist, by id (one query)."""
    if not job_ids:
        return {}
    found = session.scalars(
        select(Job).where(Job.id.in_(list(job_ids))).execution_options(populate_existing=True)
    ).all()
    return {job.id: job for job in found}


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES


__all__: Sequence[str] = [
    "IdempotencyConflict",
    "cancel_job",
    "claim_job",
    "claim_redispatch",
    "complete_job",
    "create_job",
    "fail_job",
    "find_idempotent",
    "find_succeeded_duplicate",
    "get_job",
    "get_jobs",
    "get_metrics",
    "is_terminal",
    "json_safe",
    "list_jobs",
    "recover_orphans",
    "release_redispatch",
    "renew_lease",
    "retry_job",
    "submit_job",
    "update_progress",
]
