"""``GET /jobs/{id}``: one job's page — status and progress (the page reloads itself while the job is queued or
running), metrics, the worker's PNG plots, the spec; ``GET /jobs/{id}/plots/{file}.png``: one of those plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from sqlalchemy.orm import Session

from api.deps import SessionDep, SettingsDep
from api.routes.jobs import safe_file
from api.routes.web.base import PAGE_DEPENDENCIES, PageRoute, WebReader, link, render
from api.schemas import JobOut
from core import metrics
from core.families import hyper_parameters
from core.protocol import changed_evaluations
from db import jobs
from db.models import Job, JobStatus
from db.reevaluation import reevaluation_blocker

router = APIRouter(route_class=PageRoute, dependencies=PAGE_DEPENDENCIES)


def _job_or_404(session: Session, job_id: str) -> Job:
    job = None if len(job_id) > 64 else jobs.get_job(session, job_id)
    if job is None:
        raise HTTPException(404, f"There is no job {job_id!r}.")
    return job


@router.get("/jobs/{job_id}", response_class=HTMLResponse, name="web_job")
def job_page(job_id: str, request: Request, session: SessionDep, settings: SettingsDep, _reader: WebReader) -> Response:
    """One job: status, progress and ETA (the page reloads itself every 3 s while the job is queued or running),
    metrics, plots and the spec."""
    job = _job_or_404(session, job_id)
    out = JobOut.model_validate(job)
    job_metrics = jobs.get_metrics(session, job.id)
    base = (Path(settings.artifacts_dir) / job.id).resolve()
    plots = []
    if base.is_dir():
        found = sorted(p.name for p in base.glob("*.png") if safe_file(base, p.name) is not None)
        known = list(metrics.PLOT_FILE.values())
        plots = [p for p in known if p in found] + [p for p in found if p not in known]
    info = job.info or {}
    context = {
        "job": out,
        "refresh": job.status in (JobStatus.queued.value, JobStatus.running.value),
        "progress": out.progress or {},
        "eta": _duration(out.eta_seconds),
        "metrics": sorted(job_metrics.items(), key=lambda item: metrics.sort_key(item[0])),
        "metric_notes": metrics.notes(job_metrics),
        "plots": [(name, link(request, f"/jobs/{job.id}/plots/{name}")) for name in plots],
        "warnings": info.get("warnings") or [],
        "attacks": info.get("pgd") or {},
        "suite": info.get("autoattack") or {},
        "reliability": info.get("reliability"),
        "hardware": info.get("hardware") or {},
        "checkpoints": info.get("checkpoints") or {},
        "spec_json": _pretty(out.spec),
        "hyper_parameters": hyper_parameters(out.spec),
        "provenance": out.provenance or {},
        "changed": changed_evaluations(out.protocol_version) if out.stale else [],
        "reevaluation_blocker": reevaluation_blocker(job, settings.artifacts_dir) if out.stale else None,
    }
    return render(request, "job.html", context, headers={"Cache-Control": "no-store"})


@router.get("/jobs/{job_id}/plots/{name}", name="web_job_plot")
def job_plot(job_id: str, name: str, session: SessionDep, settings: SettingsDep, _reader: WebReader) -> Response:
    """A PNG the worker wrote into the job's artifacts directory (no other file, nothing outside it)."""
    job = _job_or_404(session, job_id)
    target = safe_file((Path(settings.artifacts_dir) / job.id).resolve(), name) if name.endswith(".png") else None
    if target is None:
        raise HTTPException(404, f"Job {job_id!r} has no plot {name!r}.")
    return FileResponse(target, media_type="image/png")


def _duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)
