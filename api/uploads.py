"""Validation of uploaded checkpoints and datasets, and of the ``artifact:<id>`` references in submitted specs.

A **checkpoint** is a ``.safetensors`` file (never a pickle). Its model spec comes from the ``model`` form field
(a ModelSpec JSON), the ``spec`` field (a JobSpec JSON: its ``model`` and ``dataset``), or the file's own metadata
(a file written by ``robustlab run``). ``input_dim`` / ``output_dim`` are taken from the spec, or filled from a
dataset (the ``dataset`` field: a name such as ``spirals``, or a DatasetSpec JSON) as the runner fills them. The
model is built on PyTorch's ``meta`` device (no memory for weights) and every tensor of its ``state_dict`` must be
in the file with the same shape and a floating-point dtype, with no extra tensor; the first one that is not is
named in the ``422``. The stored file is the state dict written again with the model spec in its metadata, so the
worker's ``models.load`` rebuilds the same network.

The torch side of these checks lives in :mod:`worker.uploads` (the API imports nothing below the worker).

A **dataset** is a ``.npz`` checked by :func:`evaluation.datasets.read_npz` (``allow_pickle=False``; shapes, dtypes,
finite values, labels 0..K−1, sizes), stored as float32 inputs and int64 labels.

Torch, the models and the datasets are imported only when an upload is validated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.orm import Session

from core.config import Settings
from core.spec import MAX_DEPTH, DatasetSpec, JobSpec, ModelSpec, UploadSpec
from db.artifacts import get_artifact, parse_job_ref, parse_ref, spec_references
from worker.uploads import checkpoint_contents, dataset_dims, store_checkpoint, store_dataset

#: the most tensors a checkpoint of a valid spec can hold: ≤ 6 per layer at depth MAX_DEPTH (hamiltonian), with room
MAX_CHECKPOINT_TENSORS = 16 * MAX_DEPTH
#: a header entry of a valid checkpoint is ≤ ~120 bytes (name, dtype, shape, offsets), the model spec ≤ a few KiB
MAX_HEADER_BYTES = 4 * 1024 * 1024


class UploadInvalid(Exception):
    """The upload is rejected: ``422`` with ``detail`` (a message, or FastAPI-style error dicts)."""

    def __init__(self, detail: str | list[dict[str, Any]]) -> None:
        super().__init__(detail if isinstance(detail, str) else json.dumps(detail))
        self.detail = detail


def _errors(exc: ValidationError, *prefix: str | int) -> list[dict[str, Any]]:
    return [
        {"loc": [*prefix, *e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]


def _json_field(value: str, field: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise UploadInvalid([{"loc": ["body", field], "msg": f"not JSON: {exc.msg}", "type": "json_invalid"}]) from None


# ---------------------------------------------------------------------------------------------------- checkpoints
def _dataset_dims(session: Session, dataset: DatasetSpec) -> tuple[int, int]:
    """(input_dim, number of classes) of a dataset, as the runner finds them."""
    if isinstance(dataset, UploadSpec):
        artifact_id = parse_ref(dataset.artifact)
        artifact = get_artifact(session, artifact_id) if artifact_id else None
        if artifact is None or artifact.kind != "dataset":
            raise UploadInvalid(
                [{"loc": ["body", "dataset", "artifact"], "msg": "no uploaded dataset with this reference",
                  "type": "value_error"}]
            )  # fmt: skip
        return int(artifact.meta["input_dim"]), int(artifact.meta["num_classes"])
    try:
        return dataset_dims(dataset)
    except ValueError as exc:
        raise UploadInvalid([{"loc": ["body", "dataset"], "msg": str(exc), "type": "value_error"}]) from None


def resolve_model_spec(
    session: Session, model: str | None, spec: str | None, dataset: str | None, file_metadata: dict[str, str]
) -> ModelSpec:
    """The model spec of an uploaded checkpoint, with ``input_dim`` and ``output_dim`` set."""
    dataset_spec: DatasetSpec | None = None
    try:
        if model is not None:
            model_spec = ModelSpec.model_validate(_json_field(model, "model"))
        elif spec is not None:
            job_spec = JobSpec.model_validate(_json_field(spec, "spec"))
            model_spec, dataset_spec = job_spec.model, job_spec.dataset
        elif "model_spec" in file_metadata:
            model_spec = ModelSpec.model_validate_json(file_metadata["model_spec"])
        else:
            raise UploadInvalid(
                "give the checkpoint's model spec: a 'model' form field (ModelSpec JSON) or a 'spec' field "
                "(JobSpec JSON); the file has no robustlab model spec in its metadata"
            )
    except ValidationError as exc:
        field = "model" if model is not None else "spec" if spec is not None else "file"
        raise UploadInvalid(_errors(exc, "body", field)) from None
    if dataset is not None:
        stripped = dataset.strip()
        raw = _json_field(stripped, "dataset") if stripped.startswith("{") else {"name": stripped}
        try:
            dataset_spec = DatasetSpec.model_validate(raw)
        except ValidationError as exc:
            raise UploadInvalid(_errors(exc, "body", "dataset")) from None
    dims = {"input_dim": model_spec.input_dim, "output_dim": model_spec.output_dim}
    if dataset_spec is not None:
        input_dim, classes = _dataset_dims(session, dataset_spec)
        for name, value in (("input_dim", input_dim), ("output_dim", classes)):
            if dims[name] is not None and dims[name] != value:
                raise UploadInvalid(
                    f"model.{name} = {dims[name]} but dataset {dataset_spec.name!r} has {value}; omit it or fix it"
                )
            dims[name] = value
    missing = [name for name, value in dims.items() if value is None]
    if missing:
        raise UploadInvalid(
            f"model.{' and model.'.join(missing)} must be given to check the checkpoint (or a 'dataset' form "
            "field to fill them from, as a job does)"
        )
    try:
        return ModelSpec.model_validate({**model_spec.model_dump(), **dims})
    except ValidationError as exc:
        raise UploadInvalid(_errors(exc, "body", "model")) from None


def check_safetensors_header(path: Path) -> None:
    """Bound a safetensors header before a parser builds it: its declared length (the file's first 8 bytes, a
    little-endian u64) at most :data:`MAX_HEADER_BYTES`, and its entries at most :data:`MAX_CHECKPOINT_TENSORS`.
    A forged header of 500 000 entries otherwise costs seconds and hundreds of MB in the API before its ``422``."""
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UploadInvalid("not a valid safetensors file: shorter than its 8-byte header length")
        length = int.from_bytes(head, "little")
        if length > MAX_HEADER_BYTES:
            raise UploadInvalid(
                f"not a valid safetensors file: header of {length} bytes, over the limit of {MAX_HEADER_BYTES} bytes "
                f"(a checkpoint has at most {MAX_CHECKPOINT_TENSORS} tensors)"
            )
        header = f.read(length)
    try:
        entries = json.loads(header)
    except (ValueError, RecursionError):
        raise UploadInvalid("not a valid safetensors file: its header is not JSON") from None
    if not isinstance(entries, dict):
        raise UploadInvalid("not a valid safetensors file: its header is not a JSON object")
    tensors = len(entries) - ("__metadata__" in entries)
    if tensors > MAX_CHECKPOINT_TENSORS:
        raise UploadInvalid(f"checkpoint has {tensors} tensors, over the limit of {MAX_CHECKPOINT_TENSORS}")


def validate_checkpoint(session: Session, path: Path, form: dict[str, str | None], out: Path) -> dict[str, Any]:
    """Check the safetensors file at ``path`` against its model spec and write the stored checkpoint to ``out``.

    Returns:
        The artifact's meta: ``model_spec``, ``tensors``, ``parameters``.

    Raises:
        UploadInvalid: not a safetensors file, no usable model spec, or the first tensor that does not fit.
    """
    check_safetensors_header(path)
    try:
        file_metadata, found = checkpoint_contents(path)
        model_spec = resolve_model_spec(
            session, form.get("model"), form.get("spec"), form.get("dataset"), file_metadata
        )
        return store_checkpoint(path, model_spec, found, out)
    except ValueError as exc:
        raise UploadInvalid(str(exc)) from None


# ---------------------------------------------------------------------------------------------------- datasets
def validate_dataset(path: Path, settings: Settings, out: Path) -> dict[str, Any]:
    """Check the ``.npz`` at ``path`` and write the normalised arrays to ``out``; returns the artifact's meta."""
    try:
        return store_dataset(path, settings.max_upload_bytes, out)
    except ValueError as exc:
        raise UploadInvalid(str(exc)) from None


# ---------------------------------------------------------------------------------------------------- job specs
def check_spec_references(session: Session, spec: JobSpec, allow_paths: bool = True) -> JobSpec:
    """Check the ``artifact:<id>`` references of a submitted spec (``422`` naming the field if one is unknown, of
    the wrong kind, or does not fit) and fill ``dataset.n_train`` / ``n_test`` of an uploaded dataset from its
    sizes unless the spec sets them. Without ``allow_paths`` (``ROBUSTLAB_AUTH=keys``) a checkpoint or dataset
    must be an uploaded artifact, not a path on the worker's machine."""
    errors: list[dict[str, Any]] = []
    refs = spec_references(spec)
    updates: dict[str, Any] = {}
    if not allow_paths:
        dataset_artifact = spec.dataset.artifact if isinstance(spec.dataset, UploadSpec) else None
        for field, value in (("checkpoint", spec.checkpoint), ("dataset.artifact", dataset_artifact)):
            if value is not None and field not in refs and parse_job_ref(value) is None:  # job:<id>: checked
                errors.append(_error(field, "must be 'artifact:<id>' of an upload (paths are for `robustlab run`)"))
    for field, (kind, artifact_id) in refs.items():
        artifact = get_artifact(session, artifact_id)
        if artifact is None or artifact.kind != kind:
            errors.append(_error(field, f"no uploaded {kind} with id {artifact_id!r} (POST /api/v1/artifacts/{kind}s)"))
            continue
        meta = artifact.meta or {}
        if kind == "dataset":
            sizes = {}
            for split in ("n_train", "n_test"):
                available = int(meta[split])
                if split in spec.dataset.model_fields_set:
                    if getattr(spec.dataset, split) > available:
                        errors.append(_error(f"dataset.{split}", f"the uploaded dataset has only {available} rows"))
                else:
                    sizes[split] = available
            if sizes:
                updates["dataset"] = spec.dataset.model_copy(update=sizes)
        else:
            stored = ModelSpec.model_validate(meta["model_spec"])
            ours = spec.model.model_copy(
                update={
                    "input_dim": spec.model.input_dim or stored.input_dim,
                    "output_dim": spec.model.output_dim or stored.output_dim,
                }
            )
            theirs, mine = stored.model_dump(), ours.model_dump()
            differs = sorted(k for k in theirs.keys() | mine.keys() if theirs.get(k) != mine.get(k))
            if differs:
                message = f"the checkpoint was uploaded for another model spec (differs in {differs})"
                errors.append(_error(field, message))
    if errors:
        raise RequestValidationError(errors)
    if not updates:
        return spec
    try:  # validate again: e.g. the work budget now counts the real n_train
        return JobSpec.model_validate(spec.model_copy(update=updates).model_dump(mode="json"))
    except ValidationError as exc:
        raise RequestValidationError(_errors(exc, "body")) from None


def _error(field: str, message: str) -> dict[str, Any]:
    return {"loc": ["body", *field.split(".")], "msg": message, "type": "value_error"}
