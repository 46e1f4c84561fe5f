"""``/artifacts``: upload a checkpoint (``.safetensors``) or a dataset (``.npz``), read or download it.

::

    curl -F file=@model.safetensors -F 'model={"family": "explicit", "width": 8, "depth": 4}' \\
         -F dataset=spirals  $API/api/v1/artifacts/checkpoints          # → {"id": …, "ref": "artifact:<id>"}
    curl -F file=@data.npz  $API/api/v1/artifacts/datasets
    # then in a job spec: "checkpoint": "artifact:<id>"  /  "dataset": {"name": "upload", "artifact": "artifact:<id>"}

Uploads need a ``write`` key (``ROBUSTLAB_AUTH=keys``); the key is checked before the body is read, the body is
limited to ``ROBUSTLAB_MAX_UPLOAD_BYTES`` (``413``), and nothing is stored unless it validates (``422``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from starlette.datastructures import UploadFile

from api.deps import SessionDep, SettingsDep
from api.schemas import AUTH_ERRORS, ArtifactOut, Message
from api.security import ReadAccess, WriteAccess
from api.uploads import UploadInvalid, validate_checkpoint, validate_dataset
from db import artifacts
from db.models import Artifact

router = APIRouter(prefix="/artifacts", tags=["artifacts"])

FORM_FIELDS = {
    "checkpoint": ("model", "spec", "dataset"),
    "dataset": (),
}
ERRORS = {
    **AUTH_ERRORS,
    413: {"model": Message, "description": "the file is larger than ROBUSTLAB_MAX_UPLOAD_BYTES"},
    422: {"model": Message, "description": "the file does not validate (the message names the problem)"},
}
NOT_FOUND = {404: {"model": Message, "description": "unknown artifact id"}}


def _multipart(fields: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": fields, "required": required},
                }
            },
        }
    }


CHECKPOINT_BODY = _multipart(
    {
        "file": {"type": "string", "format": "binary", "description": "a .safetensors state dict (no pickle)"},
        "model": {"type": "string", "description": "ModelSpec JSON (input_dim and output_dim, or give 'dataset')"},
        "spec": {"type": "string", "description": "or a JobSpec JSON: its model and dataset are used"},
        "dataset": {"type": "string", "description": "a dataset name (spirals, digits) or DatasetSpec JSON"},
    },
    ["file"],
)
DATASET_BODY = _multipart(
    {"file": {"type": "string", "format": "binary", "description": "a .npz: x_train, y_train, x_test, y_test"}},
    ["file"],
)


def _copy(upload: UploadFile, target: Path, limit: int) -> tuple[int, str]:
    """Copy the upload to ``target``; returns (size, sha256). ``413`` past ``limit`` bytes."""
    digest, size = hashlib.sha256(), 0
    upload.file.seek(0)
    with target.open("wb") as out:
        while chunk := upload.file.read(1024 * 1024):
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, detail=f"the file is over the limit of {limit} bytes")
            digest.update(chunk)
            out.write(chunk)
    return size, digest.hexdigest()


async def _upload(kind: str, request: Request, session, settings, owner: str) -> Artifact:
    suffix = artifacts.EXTENSIONS[kind]
    limit = settings.max_upload_bytes
    async with request.form(max_files=1, max_fields=len(FORM_FIELDS[kind]) + 1) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(422, detail=f"a multipart 'file' field with the {suffix} is required")
        filename = Path(upload.filename or f"upload{suffix}").name
        if not filename.lower().endswith(suffix):
            raise HTTPException(422, detail=f"the file must be a {suffix}")
        if upload.size is not None and upload.size > limit:
            raise HTTPException(413, detail=f"the file is over the limit of {limit} bytes")
        fields: dict[str, str | None] = {}
        for name in FORM_FIELDS[kind]:
            value = form.get(name)
            fields[name] = value if isinstance(value, str) else None
        artifact_id = artifacts.new_id()
        final = artifacts.artifact_path(settings.artifacts_dir, kind, artifact_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        # temporary names keep the suffix (models.save writes into a directory otherwise)
        incoming = final.with_name(f".incoming-{artifact_id}{suffix}")
        checked = final.with_name(f".checked-{artifact_id}{suffix}")
        try:
            size, sha256 = await run_in_threadpool(_copy, upload, incoming, limit)
            if kind == "checkpoint":
                meta = await run_in_threadpool(validate_checkpoint, session, incoming, fields, checked)
            else:
                meta = await run_in_threadpool(validate_dataset, incoming, settings, checked)
            os.replace(checked, final)
        except UploadInvalid as exc:
            raise HTTPException(422, detail=exc.detail) from None
        finally:
            for leftover in (incoming, checked):
                leftover.unlink(missing_ok=True)
    try:
        return artifacts.create_artifact(session, artifact_id, kind, filename, size, sha256, meta, owner)
    except BaseException:
        final.unlink(missing_ok=True)
        raise


@router.post(
    "/checkpoints",
    status_code=status.HTTP_201_CREATED,
    response_model=ArtifactOut,
    responses=ERRORS,
    openapi_extra=CHECKPOINT_BODY,
)
async def upload_checkpoint(
    request: Request, session: SessionDep, settings: SettingsDep, principal: WriteAccess
) -> Artifact:
    """Upload weights to evaluate instead of training: a ``.safetensors`` file whose tensor names and shapes must
    be those of the model its spec builds (``422`` naming the first tensor that is not). Returns the artifact; a
    job spec then says ``"checkpoint": "artifact:<id>"``."""
    return await _upload("checkpoint", request, session, settings, principal.owner)


@router.post(
    "/datasets",
    status_code=status.HTTP_201_CREATED,
    response_model=ArtifactOut,
    responses=ERRORS,
    openapi_extra=DATASET_BODY,
)
async def upload_dataset(
    request: Request, session: SessionDep, settings: SettingsDep, principal: WriteAccess
) -> Artifact:
    """Upload a classification dataset: a ``.npz`` with ``x_train`` (n, features…), ``y_train`` (n,) integer
    labels in 0..K−1, ``x_test``, ``y_test`` and optionally ``valid_range`` [lo, hi]; finite values, no pickled
    objects. A job spec then says ``"dataset": {"name": "upload", "artifact": "artifact:<id>"}`` (``n_train`` /
    ``n_test`` default to the file's sizes)."""
    return await _upload("dataset", request, session, settings, principal.owner)


def _get_or_404(session, artifact_id: str) -> Artifact:
    artifact = artifacts.get_artifact(session, artifact_id)
    if artifact is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"artifact {artifact_id!r} not found")
    return artifact


@router.get(
    "/{artifact_id}",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "the stored file"},
        **NOT_FOUND,
        **AUTH_ERRORS,
    },
)
def download_artifact(
    artifact_id: str, session: SessionDep, settings: SettingsDep, _principal: ReadAccess
) -> FileResponse:
    """The stored file: the checkpoint (safetensors with the model spec in its metadata) or the dataset (npz)."""
    artifact = _get_or_404(session, artifact_id)
    path = artifacts.artifact_path(settings.artifacts_dir, artifact.kind, artifact.id)
    if not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"artifact {artifact_id!r} has no file on this server")
    suffix = artifacts.EXTENSIONS[artifact.kind]
    name = artifact.filename if artifact.filename.endswith(suffix) else f"{artifact.id}{suffix}"
    return FileResponse(path, filename=name, media_type="application/octet-stream")


@router.get("/{artifact_id}/info", response_model=ArtifactOut, responses={**NOT_FOUND, **AUTH_ERRORS})
def artifact_info(artifact_id: str, session: SessionDep, _principal: ReadAccess) -> Artifact:
    """What was uploaded: kind, size, SHA-256 of the uploaded bytes, and what validation found."""
    return _get_or_404(session, artifact_id)
