"""Re-evaluation: a new job that loads the weights a succeeded job kept and runs the current evaluation on them.

The new job's spec is the old one with ``"checkpoint": "job:<old id>"`` (resolved by the worker to
``artifacts_dir/<old id>/model.safetensors``, :func:`db.artifacts.resolve_spec`): nothing is trained again. Its row
links back (``reevaluation_of``). Asking again while a re-evaluation under the same protocol is queued, running or
succeeded returns that one (unless forced).

::

    with session_scope() as s:
        problem = reevaluation_blocker(job, artifacts_dir)     # None, or why it cannot be re-evaluated
        spec = JobSpec.model_validate(reevaluation_spec_data(job))
        new, reused = reevaluate(s, job, spec, code_version=…, protocol_version=current_protocol())
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.spec import JobSpec
from db.artifacts import JOB_REF_PREFIX, job_weights_path
from db.jobs import new_job
from db.models import Job, JobStatus

#: a re-evaluation in one of these states answers a new request under the same protocol
ACTIVE_OR_DONE = (JobStatus.queued.value, JobStatus.running.value, JobStatus.succeeded.value)


def reevaluation_blocker(job: Job, artifacts_dir: Path) -> str | None:
    """Why ``job`` cannot be re-evaluated, or ``None`` when it can: it must have succeeded and its weights must
    still be in ``artifacts_dir``."""
    if job.status != JobStatus.succeeded.value:
        return f"job {job.id!r} is {job.status}: only a succeeded job has weights to re-evaluate"
    if not job.weights_kept:
        return (
            f"job {job.id!r} kept no weights (stored without a worker's artifacts, e.g. seeded or imported): "
            "it cannot be re-evaluated; submit its spec again to retrain it"
        )
    weights = job_weights_path(artifacts_dir, job.id)
    if not weights.is_file():
        return f"job {job.id!r}'s weights are missing from the artifacts directory ({weights})"
    return None


def reevaluation_spec_data(job: Job) -> dict:
    """The old job's stored spec, loading its kept weights instead of training (validate it as a JobSpec)."""
    return {**job.spec, "checkpoint": f"{JOB_REF_PREFIX}{job.id}"}


def find_reevaluation(session: Session, source_id: str, protocol_version: str) -> Job | None:
    """The latest queued, running or succeeded re-evaluation of ``source_id`` under ``protocol_version``."""
    return session.scalar(
        select(Job)
        .where(
            Job.reevaluation_of == source_id,
            Job.protocol_version == protocol_version,
            Job.status.in_(ACTIVE_OR_DONE),
        )
        .order_by(Job.created_at.desc(), Job.id)
        .limit(1)
        .execution_options(populate_existing=True)
    )


def reevaluate(
    session: Session,
    source: Job,
    spec: JobSpec,
    *,
    code_version: str | None,
    protocol_version: str,
    reuse: bool = True,
) -> tuple[Job, bool]:
    """Queue a re-evaluation of ``source`` with ``spec`` (:func:`reevaluation_spec_data`, validated; the caller
    checked :func:`reevaluation_blocker`), unless ``reuse`` and one under ``protocol_version`` is queued, running or
    succeeded already.

    Returns:
        ``(job, reused)``.
    """
    if reuse:
        existing = find_reevaluation(session, source.id, protocol_version)
        if existing is not None:
            return existing, True
    job = new_job(spec, code_version, protocol_version, reevaluation_of=source.id)
    session.add(job)
    session.commit()
    return job, False


__all__ = ["find_reevaluation", "reevaluate", "reevaluation_blocker", "reevaluation_spec_data"]
