"""The torch side of checking uploads: what a dataset's sizes are, whether a safetensors file holds exactly the
tensors a model spec builds, and reading a user's ``.npz``. The API (:mod:`api.uploads`) calls these and turns a
``ValueError`` into its ``422``; it imports this module, never ``models`` or ``evaluation`` (which sit below the
worker). Torch, the models and the datasets are imported only when an upload is checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.spec import DatasetSpec, ModelSpec

FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}


def dataset_dims(dataset: DatasetSpec) -> tuple[int, int]:
    """(input_dim, number of classes) of a named dataset, as the runner finds them (an image dataset's from its
    facts, ``core.datasets``: its files need not be on this machine)."""
    from core.datasets import IMAGE_DATASETS

    if dataset.name in IMAGE_DATASETS:
        facts = IMAGE_DATASETS[dataset.name]
        return facts.input_dim, facts.num_classes
    from evaluation.datasets import load_dataset

    data = load_dataset(dataset)
    return data.input_dim, data.num_classes


def checkpoint_contents(path: Path) -> tuple[dict[str, str], dict[str, tuple[list[int], str]]]:
    """The metadata of a safetensors file and each tensor's (shape, dtype name), read without loading the data.

    Raises:
        ValueError: not a readable safetensors file.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            found = {}
            for name in f.keys():  # noqa: SIM118  (safe_open has no __iter__)
                piece = f.get_slice(name)
                found[name] = (list(piece.get_shape()), piece.get_dtype())
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"not a valid safetensors file: {exc}") from None
    return metadata, found


def _dtype_name(dtype) -> str:
    import torch

    return {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64"}.get(
        dtype, str(dtype).removeprefix("torch.")
    )


def store_checkpoint(
    path: Path, model_spec: ModelSpec, found: dict[str, tuple[list[int], str]], out: Path
) -> dict[str, Any]:
    """Check the file's tensors (``found``, from :func:`checkpoint_contents`) against the model ``model_spec``
    builds on PyTorch's ``meta`` device — every tensor present with its shape and a fitting dtype, none extra, all
    finite — then write the weights again to ``out`` with the model spec in the metadata (what ``models.load``
    reads).

    Returns:
        The artifact's meta: ``model_spec``, ``tensors``, ``parameters``.

    Raises:
        ValueError: naming the first tensor that does not fit, or why the model cannot be built or loaded.
    """
    import torch
    from safetensors.torch import load_file

    import models

    try:
        with torch.device("meta"):
            expected = models.build_model(model_spec).state_dict()
    except Exception as exc:  # a spec that validates but cannot be built: say so rather than 500
        raise ValueError(f"cannot build the model of this spec: {type(exc).__name__}: {exc}") from None

    def bad(message: str) -> ValueError:
        return ValueError(f"{message} (model spec: {model_spec.model_dump_json(exclude_defaults=True)})")

    for name, tensor in expected.items():
        want = list(tensor.shape)
        if name not in found:
            raise bad(f"tensor {name!r} is missing from the file: the model needs shape {want}")
        shape, dtype = found[name]
        if shape != want:
            raise bad(f"tensor {name!r} has shape {shape}; the model needs {want}")
        if tensor.dtype.is_floating_point and dtype not in FLOAT_DTYPES:
            raise bad(f"tensor {name!r} has dtype {dtype}; the model needs floating point")
        if not tensor.dtype.is_floating_point and dtype != _dtype_name(tensor.dtype):
            raise bad(f"tensor {name!r} has dtype {dtype}; the model needs {_dtype_name(tensor.dtype)}")
    extra = [name for name in found if name not in expected]
    if extra:
        raise bad(f"tensor {sorted(extra)[0]!r} is not a tensor of this model ({len(extra)} unexpected)")

    tensors = load_file(str(path), device="cpu")
    for name, tensor in expected.items():
        value = tensors[name]
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"tensor {name!r} has non-finite values (NaN or inf)")
        tensors[name] = value.to(tensor.dtype)
    model = models.build_model(model_spec)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"the weights do not load into the model: {exc}") from None
    models.save(model, model_spec, out)
    return {
        "model_spec": model_spec.model_dump(mode="json"),
        "tensors": len(expected),
        "parameters": int(sum(t.numel() for t in expected.values())),
    }


def store_dataset(path: Path, max_bytes: int, out: Path) -> dict[str, Any]:
    """Check the ``.npz`` at ``path`` (:func:`evaluation.datasets.read_npz`) and write the normalised arrays to
    ``out``; returns the artifact's meta.

    Raises:
        ValueError: naming the first problem found.
    """
    import numpy as np

    from evaluation.datasets import read_npz

    arrays, meta = read_npz(path, max_bytes=max_bytes)
    with out.open("wb") as f:
        np.savez(f, **arrays)
    return meta
