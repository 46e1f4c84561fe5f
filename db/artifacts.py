"""Uploaded artifacts (checkpoints and datasets): where their files live, their rows, and resolving the
``artifact:<id>`` references of a job spec to files.

Files are stored once validated, under the shared artifacts directory, with a name that is only the artifact's
id (a UUID: nothing a user typed reaches the file system)::

    artifacts_dir/uploads/<id>.safetensors     # kind "checkpoint": weights + the model spec in the metadata
    artifacts_dir/uploads/<id>.npz             # kind "dataset": x_train, y_train, x_test, y_test (+ valid_range)

A spec names them as ``"checkpoint": "artifact:<id>"`` and ``"dataset": {"name": "upload", "artifact":
"artifact:<id>"}``; ``"checkpoint": "job:<id>"`` names the weights a finished job kept,
``artifacts_dir/<id>/model.safetensors`` (a re-evaluation, :mod:`db.reevaluation`). The database keeps the
reference (so the spec hash does not depend on where a machine mounts the directory); the worker calls
:func:`resolve_spec` with its own ``artifacts_dir`` just before running::

    spec = resolve_spec(spec, settings.artifacts_dir)   # artifact:<id> → /data/artifacts/uploads/<id>.npz
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from core.spec import JobSpec, UploadSpec
from db.models import Artifact, utcnow

REF_PREFIX = "artifact:"
JOB_REF_PREFIX = "job:"
JOB_WEIGHTS_FILE = "model.safetensors"  # models.io.WEIGHTS_FILE (db does not import models)
UPLOADS_DIR = "uploads"
EXTENSIONS = {"checkpoint": ".safetensors", "dataset": ".npz"}
_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class ArtifactNotFound(LookupError):
    """A spec names an artifact that does not exist (or is of another kind)."""


def new_id() -> str:
    return str(uuid.uuid4())


def parse_ref(value: str | None) -> str | None:
    """The id in ``"artifact:<id>"``, or ``None`` if ``value`` is not an artifact reference (e.g. a path)."""
    if value is None or not value.startswith(REF_PREFIX):
        return None
    return value[len(REF_PREFIX) :]


def is_valid_id(artifact_id: str) -> bool:
    return bool(_ID.match(artifact_id))


def parse_job_ref(value: str | None) -> str | None:
    """The job id in ``"job:<id>"``, or ``None`` if ``value`` is not a job reference."""
    if value is None or not value.startswith(JOB_REF_PREFIX):
        return None
    return value[len(JOB_REF_PREFIX) :]


def job_weights_path(artifacts_dir: Path, job_id: str) -> Path:
    """Where the worker keeps the weights of job ``job_id`` (``artifacts_dir/<id>/model.safetensors``).

    Raises:
        ArtifactNotFound: ``job_id`` is not a job id (a UUID: never a path that could leave the directory).
    """
    if not is_valid_id(job_id):
        raise ArtifactNotFound(f"{job_id!r} is not a job id")
    return Path(artifacts_dir) / job_id / JOB_WEIGHTS_FILE


def artifact_path(artifacts_dir: Path, kind: str, artifact_id: str) -> Path:
    """Where the file of artifact ``artifact_id`` of ``kind`` is stored.

    Raises:
        ArtifactNotFound: ``artifact_id`` is not an artifact id (never a path, so it cannot leave the directory).
    """
    if not is_valid_id(artifact_id):
        raise ArtifactNotFound(f"{artifact_id!r} is not an artifact id")
    return Path(artifacts_dir) / UPLOADS_DIR / f"{artifact_id}{EXTENSIONS[kind]}"


def create_artifact(
    session: Session,
    artifact_id: str,
    kind: str,
    filename: str,
    size_bytes: int,
    sha256: str,
    meta: dict[str, Any],
    owner: str = "",
) -> Artifact:
    artifact = Artifact(
        id=artifact_id,
        kind=kind,
        filename=filename[:255],
        size_bytes=size_bytes,
        sha256=sha256,
        meta=meta,
        owner=owner,
        created_at=utcnow(),
    )
    session.add(artifact)
    session.commit()
    return artifact


def get_artifact(session: Session, artifact_id: str) -> Artifact | None:
    if not is_valid_id(artifact_id):
        return None
    return session.get(Artifact, artifact_id)


def spec_references(spec: JobSpec) -> dict[str, tuple[str, str]]:
    """The artifact references of a spec: ``{field: (kind, id)}`` with fields ``checkpoint`` and
    ``dataset.artifact``."""
    refs: dict[str, tuple[str, str]] = {}
    checkpoint = parse_ref(spec.checkpoint)
    if checkpoint is not None:
        refs["checkpoint"] = ("checkpoint", checkpoint)
    dataset = parse_ref(spec.dataset.artifact) if isinstance(spec.dataset, UploadSpec) else None
    if dataset is not None:
        refs["dataset.artifact"] = ("dataset", dataset)
    return refs


def resolve_spec(spec: JobSpec, artifacts_dir: Path) -> JobSpec:
    """``spec`` with its ``artifact:<id>`` and ``job:<id>`` references replaced by the stored files' paths (other
    values are kept: a local path stays a local path).

    Raises:
        ArtifactNotFound: a referenced file is not in ``artifacts_dir`` (not uploaded, or another directory).
    """
    update: dict[str, Any] = {}
    job_id = parse_job_ref(spec.checkpoint)
    if job_id is not None:
        weights = job_weights_path(artifacts_dir, job_id)
        if not weights.is_file():
            raise ArtifactNotFound(f"checkpoint: job {job_id} kept no weights at {weights}")
        update["checkpoint"] = str(weights.resolve())
    for field, (kind, artifact_id) in spec_references(spec).items():
        path = artifact_path(artifacts_dir, kind, artifact_id)
        if not path.is_file():
            raise ArtifactNotFound(f"{field}: no uploaded {kind} {artifact_id} at {path}")
        if field == "checkpoint":
            update["checkpoint"] = str(path.resolve())
        else:
            update["dataset"] = spec.dataset.model_copy(update={"artifact": str(path.resolve())})
    return spec.model_copy(update=update) if update else spec


__all__ = [
    "EXTENSIONS",
    "JOB_REF_PREFIX",
    "REF_PREFIX",
    "ArtifactNotFound",
    "artifact_path",
    "create_artifact",
    "get_artifact",
    "is_valid_id",
    "job_weights_path",
    "new_id",
    "parse_job_ref",
    "parse_ref",
    "resolve_spec",
    "spec_references",
]
