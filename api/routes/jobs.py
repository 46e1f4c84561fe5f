"""``/jobs``: submit a JobSpec, list jobs, read one job, its results and files, cancel or retry it."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from fastapi import APIRouter, Header, HTTPException, Query, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from api.deps import DispatcherDep, SessionDep, SettingsDep
from api.schemas import AUTH_ERRORS, JobFile, JobFiles, JobList, JobOut, JobResults, JobStatusName, Message
from api.security import ReadAccess, WriteAccess
from api.uploads import check_spec_references
from core.budget import over_limits
from core.protocol import current_protocol
from core.provenance import current_code
from core.spec import JobSpec
from db import jobs, lifecycle
from db.artifacts import parse_job_ref
from db.models import Job
from db.reevaluation import reevaluate, reevaluation_blocker, reevaluation_spec_data

router = APIRouter(prefix="/jobs", tags=["jobs"])

NOT_FOUND = {404: {"model": Message, "description": "unknown job id"}}
AUTH = AUTH_ERRORS


def _get_or_404(session: Session, job_id: str) -> Job:
    job = jobs.get_job(session, job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {job_id!r} not found")
    return job


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobOut,
    responses={
        200: {
            "model": JobOut,
            "description": "an earlier job answers this request (Idempotency-Key, or a "
            "succeeded job with the same spec hash, code identity and protocol version)",
        },  # fmt: skip
        413: {"model": Message, "description": "the spec is larger than ROBUSTLAB_MAX_SPEC_BYTES"},
        **AUTH,
    },
)
def submit_job(
    spec: JobSpec,
    session: SessionDep,
    settings: SettingsDep,
    dispatcher: DispatcherDep,
    response: Response,
    principal: WriteAccess,
    force: bool = Query(
        False, description="run again even if a succeeded job has the same spec, code identity and protocol version"
    ),
    idempotency_key: str | None = Header(
        None,
        min_length=1,
        max_length=255,
        description="a client-chosen unique key: sending the same request again returns the same job (200)",
    ),
) -> Job:
    """Store the job (status ``queued``) and send it to the ``cpu`` or ``gpu`` queue: ``201``. If the broker is
    down the job stays queued in the database (header ``X-Robustlab-Enqueued: false``) and is sent later.

    ``200`` with an existing job instead when the request was already answered: the same ``Idempotency-Key``
    (``X-Robustlab-Reused: idempotency-key``; the key reused with another spec is ``422``), or — unless
    ``?force=true`` — a succeeded job with the same spec hash, code identity (version, commit, dirty flag) and
    evaluation protocol version (``X-Robustlab-Reused: succeeded-job``): the runs are seeded, so running it again
    would give the same numbers. Other code, or another protocol, runs a new job.

    A spec whose estimated cost (:mod:`core.budget`: parameters, activation memory, evaluation passes and
    work) is over a ``ROBUSTLAB_MAX_*`` limit is ``422`` naming the estimate and the limit.

    ``checkpoint`` / ``dataset.artifact`` may name uploads as ``artifact:<id>``; an unknown one is ``422`` (with
    ``ROBUSTLAB_AUTH=keys`` they must: a path on the worker's machine is refused). ``checkpoint`` may also be
    ``job:<id>``: the weights a succeeded job kept (``422`` when it kept none)."""
    too_large = over_limits(spec, settings)  # estimated parameters, memory, evaluation passes and work
    if too_large:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", field), "msg": msg, "input": None} for field, msg in too_large]
        )
    source_id = parse_job_ref(spec.checkpoint)
    if source_id is not None:
        source = jobs.get_job(session, source_id) if len(source_id) <= 64 else None
        problem = f"no job {source_id!r}" if source is None else reevaluation_blocker(source, settings.artifacts_dir)
        if problem is not None:
            raise HTTPException(422, detail=[{"loc": ["body", "checkpoint"], "msg": problem, "type": "value_error"}])
    spec = check_spec_references(session, spec, allow_paths=settings.auth == "open")
    try:
        job, reused = jobs.submit_job(
            session,
            spec,
            code_version=current_code().identity,
            protocol_version=current_protocol(),
            idempotency_key=idempotency_key,
            owner=principal.owner,
            reuse_succeeded=not force,
        )
    except jobs.IdempotencyConflict as exc:
        raise HTTPException(422, detail=str(exc)) from None
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    if reused is None:
        enqueued = dispatcher.enqueue(job.id, spec.queue())
        response.headers["X-Robustlab-Enqueued"] = "true" if enqueued else "false"
    else:
        response.status_code = status.HTTP_200_OK
        response.headers["X-Robustlab-Reused"] = reused
    return job


@router.get("", response_model=JobList, responses=AUTH)
def list_jobs(
    session: SessionDep,
    _principal: ReadAccess,
    status_: JobStatusName | None = Query(None, alias="status"),
    dataset: str | None = None,
    family: str | None = None,
    stale: bool = Query(False, description="only succeeded jobs evaluated under another protocol than the current one"),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=2**63 - 1),  # PostgreSQL OFFSET is a bigint: larger is a 500
) -> JobList:
    """Jobs, newest first. ``stale=true``: the succeeded jobs to re-evaluate after an evaluation upgrade."""
    stale_against = current_protocol() if stale else None
    items, total = jobs.list_jobs(
        session, status_, limit, offset, dataset=dataset, family=family, stale_against=stale_against
    )
    return JobList(items=[JobOut.model_validate(j) for j in items], total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobOut, responses={**NOT_FOUND, **AUTH})
def get_job(job_id: str, session: SessionDep, _principal: ReadAccess) -> Job:
    """Spec, status, progress (phase, epoch, loss, ``eta_seconds``), error and timestamps of one job."""
    return _get_or_404(session, job_id)


@router.get(
    "/{job_id}/results",
    response_model=JobResults,
    responses={**NOT_FOUND, **AUTH, 409: {"model": Message, "description": "the job has not finished yet"}},
)
def get_results(job_id: str, session: SessionDep, _principal: ReadAccess) -> JobResults:
    """Metrics and info of a finished job (a failed or cancelled job has no metrics, and its ``error``)."""
    job = _get_or_404(session, job_id)
    if not job.finished:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"job {job_id!r} is {job.status}: results exist once it has finished"
        )
    return JobResults(
        job_id=job.id,
        name=job.name,
        status=job.status,
        metrics=jobs.get_metrics(session, job.id),
        info=job.info or {},
        error=job.error,
    )


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    responses={**NOT_FOUND, **AUTH, 409: {"model": Message, "description": "the job has already finished"}},
)
def cancel_job(job_id: str, session: SessionDep, _principal: WriteAccess) -> Job:
    """Cancel a queued job (at once: no worker will run it) or a running one: its worker stops between two epochs
    (at its next progress write or lease renewal) and stores nothing."""
    job = _get_or_404(session, job_id)
    cancelled = lifecycle.cancel_job(session, job.id)
    if cancelled is None:
        job = _get_or_404(session, job_id)
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"job {job_id!r} has already finished ({job.status})")
    return cancelled


@router.post(
    "/{job_id}/retry",
    response_model=JobOut,
    responses={**NOT_FOUND, **AUTH, 409: {"model": Message, "description": "the job is not failed or cancelled"}},
)
def retry_job(job_id: str, session: SessionDep, dispatcher: DispatcherDep, _principal: WriteAccess) -> Job:
    """Queue a failed or cancelled job again (attempts, error and progress reset) and send it to the broker."""
    _get_or_404(session, job_id)
    job = lifecycle.retry_job(session, job_id)
    if job is None:
        current = _get_or_404(session, job_id)
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"job {job_id!r} is {current.status}: only failed or cancelled jobs can be retried",
        )
    dispatcher.enqueue(job.id, "gpu" if (job.spec or {}).get("device") == "cuda" else "cpu")  # as JobSpec.queue()
    return job


@router.post(
    "/{job_id}/reevaluate",
    status_code=status.HTTP_201_CREATED,
    response_model=JobOut,
    responses={
        200: {"model": JobOut, "description": "a re-evaluation under the current protocol exists already"},
        **NOT_FOUND,
        **AUTH,
        409: {"model": Message, "description": "the job is not succeeded, or its weights were not kept"},
    },
)
def reevaluate_job(
    job_id: str,
    session: SessionDep,
    settings: SettingsDep,
    dispatcher: DispatcherDep,
    response: Response,
    _principal: WriteAccess,
    force: bool = Query(False, description="queue a new re-evaluation even if one under this protocol exists"),
) -> Job:
    """Queue a job that loads the weights the succeeded job ``job_id`` kept and runs the current evaluation on them
    (no training): its spec is the old one with ``"checkpoint": "job:<id>"``, and ``reevaluation_of`` links it to
    the old job. ``201`` (``X-Robustlab-Enqueued``); ``200`` with the existing one when a re-evaluation under the
    current protocol is queued, running or succeeded already (``X-Robustlab-Reused: reevaluation``; ``?force=true``
    queues another). ``409`` names why a job cannot be re-evaluated: not succeeded, or no weights kept."""
    source = _get_or_404(session, job_id)
    problem = reevaluation_blocker(source, settings.artifacts_dir)
    if problem is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=problem)
    try:
        spec = JobSpec.model_validate(reevaluation_spec_data(source))
    except ValidationError as exc:
        detail = f"job {job_id!r}'s stored spec is not valid for this version: {exc.errors()[0]['msg']}"
        raise HTTPException(status.HTTP_409_CONFLICT, detail=detail) from None
    job, reused = reevaluate(
        session,
        source,
        spec,
        code_version=current_code().identity,
        protocol_version=current_protocol(),
        reuse=not force,
    )
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    if reused:
        response.status_code = status.HTTP_200_OK
        response.headers["X-Robustlab-Reused"] = "reevaluation"
    else:
        enqueued = dispatcher.enqueue(job.id, spec.queue())
        response.headers["X-Robustlab-Enqueued"] = "true" if enqueued else "false"
    return job


# ---------------------------------------------------------------------------------------------------- files
def _job_dir(settings, job: Job) -> Path:
    return (Path(settings.artifacts_dir) / job.id).resolve()


def safe_file(base: Path, relative: str) -> Path | None:
    """``base / relative`` if it is a regular, non-hidden file inside ``base`` (symbolic links resolved), else
    ``None``: no ``..``, no absolute path, no link out of the directory, no temporary ``.partial`` file."""
    if not relative or "\x00" in relative or "\\" in relative:
        return None
    parts = PurePosixPath(relative).parts
    if PurePosixPath(relative).is_absolute() or any(p in ("..", ".") or p.startswith(".") for p in parts):
        return None
    target = (base / Path(*parts)).resolve()
    if not target.is_relative_to(base) or not target.is_file():
        return None
    return target


@router.get("/{job_id}/artifacts", response_model=JobFiles, responses={**NOT_FOUND, **AUTH})
def list_job_files(job_id: str, session: SessionDep, settings: SettingsDep, _principal: ReadAccess) -> JobFiles:
    """The files the worker wrote for this job (``model.safetensors``, ``result.json``, ``spec.json``, …)."""
    job = _get_or_404(session, job_id)
    base = _job_dir(settings, job)
    files = []
    if base.is_dir():
        for path in sorted(base.rglob("*")):
            relative = path.relative_to(base).as_posix()
            if safe_file(base, relative) is not None:
                files.append(JobFile(path=relative, size_bytes=path.stat().st_size))
    return JobFiles(job_id=job.id, files=files)


@router.get(
    "/{job_id}/artifacts/{path:path}",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "the file"},
        404: {"model": Message, "description": "unknown job, or no such file"},
        **AUTH,
    },
)
def download_job_file(
    job_id: str, path: str, session: SessionDep, settings: SettingsDep, _principal: ReadAccess
) -> FileResponse:
    """One file of the job's artifacts directory, e.g. ``model.safetensors`` (weights, with the model spec in the
    safetensors metadata: ``models.load(path)``). Paths are relative to that directory and cannot leave it."""
    job = _get_or_404(session, job_id)
    target = safe_file(_job_dir(settings, job), path)
    if target is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {job_id!r} has no file {path!r}")
    return FileResponse(target, filename=target.name, media_type="application/octet-stream")
