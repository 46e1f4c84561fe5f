"""Jobs as they are submitted and read: creating a job (idempotency keys, re-use of a succeeded one), finding and
listing jobs and their metrics.

Each function is one unit of work: it takes a :class:`~sqlalchemy.orm.Session`, does its reads/writes and commits.
What happens to a job after it is queued goes through :mod:`db.lifecycle` (claim, lease, progress, completion,
cancel, retry); the API's recovery sweep through :mod:`db.recovery`; the leaderboard reads :mod:`db.leaderboard`.

Example::

    with session_scope() as s:
        job, reused = submit_job(s, spec, code_version=…, protocol_version=…, idempotency_key="k")
        page, total = list_jobs(s, status="queued", limit=20)
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import exists, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from core.spec import JobSpec
from db.models import IdempotencyKey, Job, JobStatus, Result, utcnow


# ---------------------------------------------------------------------------------------------------- create
def new_job(
    spec: JobSpec,
    code_version: str | None = None,
    protocol_version: str | None = None,
    reevaluation_of: str | None = None,
) -> Job:
    """A ``queued`` job row for ``spec``, not added to any session yet."""
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
    job = new_job(spec, code_version, protocol_version)
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
    job = existing or new_job(spec, code_version, protocol_version)
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


# ---------------------------------------------------------------------------------------------------- read
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


def get_jobs(session: Session, job_ids: Sequence[str]) -> dict[str, Job]:
    """The jobs among ``job_ids`` that exist, by id (one query)."""
    if not job_ids:
        return {}
    found = session.scalars(
        select(Job).where(Job.id.in_(list(job_ids))).execution_options(populate_existing=True)
    ).all()
    return {job.id: job for job in found}


__all__: Sequence[str] = [
    "IdempotencyConflict",
    "create_job",
    "find_idempotent",
    "find_succeeded_duplicate",
    "get_job",
    "get_jobs",
    "get_metrics",
    "list_jobs",
    "new_job",
    "submit_job",
]
