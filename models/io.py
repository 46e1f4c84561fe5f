"""Save and load models as safetensors — weights only, never pickle.

The model spec travels in the safetensors metadata (key ``model_spec``), so a single file rebuilds its network.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from core.spec import ModelSpec
from models.build import build_model

WEIGHTS_FILE = "model.safetensors"


def save(model: nn.Module, model_spec, path: str | Path) -> Path:
    """Write ``model``'s state dict and its model spec to ``path`` (a directory or a ``.safetensors`` file)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path.mkdir(parents=True, exist_ok=True)
        path = path / WEIGHTS_FILE
    # clone: safetensors refuses tensors that share memory (shared_weights); load_state_dict copies back into them
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"model_spec": model_spec.model_dump_json(), "format": "robustlab/1"})
    return path


def read_model_spec(path: str | Path) -> ModelSpec:
    """The ``ModelSpec`` stored in a checkpoint's metadata."""
    path = _weights_path(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "model_spec" not in meta:
        raise ValueError(f"{path} has no robustlab model spec in its metadata")
    return ModelSpec.model_validate(json.loads(meta["model_spec"]))


def load(path: str | Path, device: str = "cpu") -> nn.Module:
    """Rebuild the network saved at ``path`` (a ``run --out`` directory or a ``.safetensors`` file), in eval mode."""
    from safetensors.torch import load_file

    path = _weights_path(path)
    model = build_model(read_model_spec(path))
    model.load_state_dict(load_file(str(path), device="cpu"), strict=True)
    return model.to(device).eval()


def _weights_path(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return path
