"""Response schemas. The request body of ``POST /jobs`` is :class:`core.spec.JobSpec` itself (the one
schema shared with the worker and the CLI); it is not duplicated here."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.metrics import LEVEL_KINDS, SCALAR_KINDS, group_levels
from core.protocol import current_protocol

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


class LeaderboardEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)

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
    gaussian_acc: dict[str, float] = Field(default_factory=dict, description="σ → accuracy under Gaussian noise")
    pgd_linf_acc: dict[str, float] = Field(default_factory=dict, description="ε → accuracy under PGD (L∞)")
    pgd_l2_acc: dict[str, float] = Field(default_factory=dict, description="ε → accuracy under PGD (L2)")
    certified_l2_acc: dict[str, float] = Field(default_factory=dict, description="ε → certified L2 accuracy")
    # regression and denoising (empty / null for classification)
    clean_mse: float | None = Field(None, description="regression, denoising: test MSE")
    clean_psnr: float | None = Field(None, description="regression, denoising: test PSNR (dB)")
    gaussian_mse: dict[str, float] = Field(default_factory=dict, description="σ → MSE under Gaussian noise")
    gaussian_psnr: dict[str, float] = Field(default_factory=dict, description="σ → PSNR (dB) under Gaussian noise")
    pgd_linf_mse: dict[str, float] = Field(
        default_factory=dict, description="ε → worst MSE found by PGD (L∞; a lower bound on the worst case)"
    )
    pgd_l2_mse: dict[str, float] = Field(
        default_factory=dict, description="ε → worst MSE found by PGD (L2; a lower bound on the worst case)"
    )
    certified_linf_mse: dict[str, float] = Field(
        default_factory=dict, description="ε → certified upper bound on the worst-case MSE (L∞ ball)"
    )
    certified_l2_mse: dict[str, float] = Field(
        default_factory=dict, description="ε → certified upper bound on the worst-case MSE (L2 ball)"
    )
    metrics: dict[str, float]
    created_at: datetime
    finished_at: datetime | None = None
    code_version: str | None = Field(None, description="code identity that produced the numbers")
    protocol_version: str | None = Field(None, description="evaluation protocol the numbers come from")
    stale: bool = Field(False, description="evaluated under another protocol than the current one")
    reevaluation_of: str | None = Field(None, description="a re-evaluation: the job whose weights it evaluated")
    weights_kept: bool = Field(False, description="weights kept: the entry can be re-evaluated")

    @model_validator(mode="after")
    def _stale(self) -> LeaderboardEntry:
        self.stale = self.protocol_version != current_protocol()
        return self

    @model_validator(mode="after")
    def _group_robustness(self) -> LeaderboardEntry:
        """``gaussian_acc@0.1`` → ``gaussian_acc["0.1"]``, and so on for PGD and certified accuracy and the
        regression metrics (``gaussian_psnr@0.1``, ``pgd_l2_mse@0.1`` …; the kinds of
        :data:`core.metrics.LEVEL_KINDS`); ``clean_mse`` and ``clean_psnr`` from the metrics."""
        for kind, levels in group_levels(self.metrics, LEVEL_KINDS).items():
            getattr(self, kind).update(levels)
        for kind in SCALAR_KINDS:
            if getattr(self, kind) is None and kind in self.metrics:
                setattr(self, kind, self.metrics[kind])
        return self


def _optional(cast: type, value: Any) -> Any:
    return None if value is None else cast(value)


def leaderboard_entry_data(row: Any) -> dict[str, Any]:
    """``LeaderboardEntry.model_validate(row).model_dump()`` of a :class:`db.jobs.LeaderboardRow`, built directly:
    the JSON leaderboard is serialised from these plain dicts (``pydantic_core.to_json``), which costs a fraction of
    validating a model per row. Same keys in the same order, same types and the same grouping of the robustness
    numbers (the test ``test_fast_json_is_the_models_json`` holds the two together)."""
    metrics = {name: float(value) for name, value in row.metrics.items()}
    grouped = group_levels(metrics, LEVEL_KINDS)
    entry: dict[str, Any] = {
        "rank": int(row.rank),
        "job_id": row.job_id,
        "name": row.name,
        "dataset": row.dataset,
        "family": row.family,
        "task": row.task,
        "width": _optional(int, row.width),
        "depth": _optional(int, row.depth),
        "theta": _optional(float, row.theta),
        "h": _optional(float, row.h),
        "hyper_parameters": row.hyper_parameters,
        "value": float(row.value),
    }
    for kind in _ENTRY_METRIC_FIELDS:
        if kind in SCALAR_KINDS:
            value = getattr(row, kind, None)
            entry[kind] = _optional(float, metrics.get(kind) if value is None else value)
        else:
            entry[kind] = grouped.get(kind, {})
    entry.update(metrics=metrics, created_at=row.created_at, finished_at=row.finished_at)
    entry.update(
        code_version=row.code_version,
        protocol_version=row.protocol_version,
        stale=row.protocol_version != current_protocol(),
        reevaluation_of=row.reevaluation_of,
        weights_kept=bool(row.weights_kept),
    )
    return entry


_ENTRY_METRIC_FIELDS = tuple(name for name in LeaderboardEntry.model_fields if name in LEVEL_KINDS + SCALAR_KINDS)


class Leaderboard(BaseModel):
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
