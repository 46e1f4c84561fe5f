"""Response schemas. The request body of ``POST /jobs`` is :class:`core.spec.JobSpec` itself (the one
schema shared with the worker and the CLI); it is not duplicated here."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.protocol import current_protocol
from db.leaderboard import LeaderboardEntry

JobStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    status: JobStatusName
    dataset: str
    family: str
    task: str
    spec: dict[str, Any] = Field(description="the submitted JobSpec with all defaults filled in")
    spec_hash: str
    progress: dict[str, Any] | None = Field(None, description='latest report, e.g. {"phase": "train", "epoch": 3}')
    error: str | None = None
    worker: str | None = None
    attempts: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    code_version: str | None = Field(
        None,
        description="code identity that ran the job (the API's until a worker stores the result): version, commit "
        "and dirty flag: <version>+g<commit>[.dirty.<digest>] (core/provenance.py)",
    )
    protocol_version: str | None = Field(
        None, description="evaluation protocol the numbers come from, e.g. gaussian.1+pgd.1 (core/protocol.py)"
    )
    stale: bool = Field(
        False, description="succeeded under another evaluation protocol than the server's current one (re-evaluate)"
    )
    reevaluation_of: str | None = Field(None, description="a re-evaluation: the job whose stored weights it evaluated")
    weights_kept: bool = Field(False, description="the worker kept the weights (model.safetensors): re-evaluable")
    provenance: dict[str, Any] | None = Field(
        None, description="the worker's record: code identity, library versions (torch, torchattacks, numpy), "
        "protocol version and each evaluation's revision",
    )  # fmt: skip
    eta_seconds: float | None = Field(
        None, description="estimated seconds of training left, from the epoch timing the worker reports (running)"
    )

    @model_validator(mode="after")
    def _stale(self) -> JobOut:
        self.stale = self.status == "succeeded" and self.protocol_version != current_protocol()
        return self

    @model_validator(mode="after")
    def _eta_now(self) -> JobOut:
        """The worker's ETA at its last progress write, less the time since that write."""
        progress = self.progress or {}
        eta, updated = progress.get("eta_seconds"), progress.get("updated_at")
        if self.status != "running" or not isinstance(eta, (int, float)) or not isinstance(updated, str):
            self.eta_seconds = None
            return self
        try:
            since = (datetime.now(timezone.utc) - datetime.fromisoformat(updated)).total_seconds()
        except (TypeError, ValueError):
            since = 0.0
        self.eta_seconds = round(max(float(eta) - max(since, 0.0), 0.0), 3)
        return self


class JobList(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int


class JobResults(BaseModel):
    job_id: str
    name: str
    status: JobStatusName
    metrics: dict[str, float] = Field(description="flat metric names: clean_acc, gaussian_acc@0.3, pgd_linf_acc@0.1")
    info: dict[str, Any] = Field(
        default_factory=dict,
        description="versions, attack settings, warnings, solvers; outcomes: bit-packed per-sample outcomes",
    )
    error: str | None = None


class Leaderboard(BaseModel):
    """One page of the leaderboard, best first."""

    metric: str = Field(description="the ranking metric, with its ε / σ: pgd_linf_acc@0.1")
    order: Literal["desc", "asc"]
    dataset: str | None = None
    family: str | None = None
    task: str | None = None
    current: bool = Field(False, description="only entries evaluated under the current protocol")
    protocol_version: str = Field(
        default_factory=current_protocol, description="the server's current evaluation protocol version"
    )
    limit: int = 20
    entries: list[LeaderboardEntry]
    next_cursor: str | None = Field(
        None, description="pass as ?cursor= (with the same filters) for the next page; null on the last page"
    )


class CompareJob(BaseModel):
    job_id: str
    name: str
    status: JobStatusName
    dataset: str
    family: str
    task: str
    hyper_parameters: dict[str, Any]
    created_at: datetime
    finished_at: datetime | None = None


class Comparison(BaseModel):
    jobs: list[CompareJob] = Field(description="the jobs in the order asked for")
    metrics: dict[str, list[float | None]] = Field(
        description="metric → one value per job (same order as ``jobs``; null where a job lacks it)"
    )


class ArtifactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: Literal["checkpoint", "dataset"]
    ref: str = Field("", description="what a job spec uses: 'artifact:<id>'")
    filename: str
    size_bytes: int
    sha256: str
    meta: dict[str, Any] = Field(description="checkpoint: model_spec, tensors; dataset: shapes, num_classes")
    created_at: datetime

    @model_validator(mode="after")
    def _ref(self) -> ArtifactOut:
        self.ref = f"artifact:{self.id}"
        return self


class JobFile(BaseModel):
    path: str = Field(description="relative to the job's artifacts directory: model.safetensors, result.json, …")
    size_bytes: int


class JobFiles(BaseModel):
    job_id: str
    files: list[JobFile]


class ComponentHealth(BaseModel):
    ok: bool
    detail: str | None = None


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    database: ComponentHealth
    broker: ComponentHealth
    version: str = Field(description="the package version (pyproject.toml)")
    code_version: str = Field(description="this server's code identity: version, commit, dirty flag")
    protocol_version: str = Field(description="the evaluation protocol version new jobs are evaluated under")


class Message(BaseModel):
    detail: str


#: the errors any route behind :mod:`api.security` may answer, for its ``responses=`` in the OpenAPI schema
AUTH_ERRORS: dict[int | str, dict] = {
    401: {"model": Message, "description": "missing or invalid API key (ROBUSTLAB_AUTH=keys)"},
    403: {"model": Message, "description": "the API key's scope does not allow this"},
    429: {"model": Message, "description": "rate limit: retry after Retry-After seconds"},
}
