"""Tables: ``jobs`` (one row per submitted spec, the source of truth for job state) and ``results`` (one row per
metric of a finished job, so the leaderboard can sort on any metric with an index); ``api_keys`` (hashes of the
Bearer keys), ``idempotency_keys`` (``Idempotency-Key`` header → job) and ``artifacts`` (uploaded checkpoints and
datasets).

``dataset``, ``family`` and ``task`` are copied out of the spec at submission so that listing and the leaderboard
filter on indexed columns instead of JSON. The migrations in ``db/migrations/versions/`` are written to match
these classes; a test checks that Alembic's autogenerate finds no difference.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class JobStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL_STATUSES = frozenset({JobStatus.succeeded.value, JobStatus.failed.value, JobStatus.cancelled.value})


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """``TIMESTAMP WITH TIME ZONE`` that always hands back aware UTC datetimes, also on SQLite (which stores naive
    strings): values are converted to UTC on the way in, so string comparison on SQLite orders them correctly."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime}


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name="status_valid"),
        Index("ix_jobs_status_created_at", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    dataset: Mapped[str] = mapped_column(String(64), index=True)
    family: Mapped[str] = mapped_column(String(64), index=True)
    task: Mapped[str] = mapped_column(String(64), index=True)
    spec: Mapped[dict[str, Any]]
    spec_hash: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued.value)
    progress: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None]
    # while queued: when the API's recovery sweep may send the job to the broker again (NULL: created_at plus
    # settings.redispatch_after); see db.recovery.claim_redispatch
    redispatch_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    info: Mapped[dict[str, Any] | None]
    # provenance (core/provenance.py, core/protocol.py): the code identity and the evaluation protocol
    # version of the API at submission, replaced by the worker's when the job succeeds; de-duplication compares both
    code_version: Mapped[str | None] = mapped_column(String(100))
    protocol_version: Mapped[str | None] = mapped_column(String(255))
    # a re-evaluation (POST /jobs/{id}/reevaluate): the job whose stored weights it evaluates
    reevaluation_of: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    # the worker kept the trained (or loaded) weights: artifacts_dir/<id>/model.safetensors (re-evaluable)
    weights_kept: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    results: Mapped[list[Result]] = relationship(
        back_populates="job", cascade="all, delete-orphan", passive_deletes=True, lazy="raise_on_sql"
    )

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def provenance(self) -> dict[str, Any] | None:
        """What produced the stored numbers (``info["provenance"]``, written by the worker): code identity, library
        versions, protocol version and revisions."""
        found = (self.info or {}).get("provenance")
        return found if isinstance(found, dict) else None

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, name={self.name!r}, status={self.status!r})"


class Result(Base):
    __tablename__ = "results"
    __table_args__ = (
        UniqueConstraint("job_id", "name"),
        # The leaderboard's keyset pagination: WHERE name = :metric AND (value, job_id) < (:v, :id)
        # ORDER BY value DESC, job_id DESC — one index range scan (read backwards for ascending order).
        Index("ix_results_name_value_job_id", "name", "value", "job_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Double)

    job: Mapped[Job] = relationship(back_populates="results")

    def __repr__(self) -> str:
        return f"Result(job_id={self.job_id!r}, {self.name}={self.value!r})"


API_KEY_SCOPES = ("read", "write", "admin")


class ApiKey(Base):
    """A Bearer API key: only its SHA-256 is stored. ``prefix`` (the public part of the key, ``rlk_<prefix>_…``)
    finds the row; the hash is then compared in constant time."""

    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint("scope IN ('read', 'write', 'admin')", name="scope_valid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"ApiKey(name={self.name!r}, scope={self.scope!r}, revoked={self.revoked_at is not None})"


class IdempotencyKey(Base):
    """``Idempotency-Key`` header of ``POST /jobs`` → the job it created (or returned). Unique per owner (the API
    key's name; empty when auth is open), so a retried request returns the same job."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("owner", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Artifact(Base):
    """An uploaded, validated file: a ``checkpoint`` (safetensors, the model spec in its metadata) or a
    ``dataset`` (npz). Stored under ``artifacts_dir/uploads/<id><ext>``; ``meta`` holds what validation found
    (model spec, tensor count; shapes, classes)."""

    __tablename__ = "artifacts"
    __table_args__ = (CheckConstraint("kind IN ('checkpoint', 'dataset')", name="kind_valid"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    meta: Mapped[dict[str, Any]]
    owner: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return f"Artifact(id={self.id!r}, kind={self.kind!r}, filename={self.filename!r})"
