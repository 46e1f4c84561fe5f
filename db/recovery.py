"""The API's recovery sweep in the database: jobs whose worker was lost go back to the queue, and queued jobs the
broker may have lost are handed out to be sent again, each by exactly one of several sweeping API processes
(:mod:`api.dispatch` runs the sweep and talks to the broker).

Example::

    with session_scope() as s:
        requeued, failed = recover_orphans(s, max_attempts=3)
        for job in claim_redispatch(s, after=60, max_interval=600):
            ...   # send job.id to the broker; release_redispatch(s, [job.id]) if it refused
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from db.models import Job, JobStatus, utcnow


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


__all__: Sequence[str] = ["claim_redispatch", "recover_orphans", "release_redispatch"]
