"""Per-sample outcomes of an evaluation, stored compactly for the CI gate's paired tests.

The evaluation already computes, per test sample, boolean tensors: correct when clean, robust under an attack at ε,
certified at ε, correct under each Gaussian-noise draw. :func:`pack_outcomes` is the one place that turns them into
what ``result.json`` (``info.outcomes``) and the API's results carry::

    {"n": 797, "test_set": "sha256:…",                    # the test set they were measured on
     "metrics": {"clean_acc": {"shape": [797], "bits": "<base64 of numpy.packbits>"},
                 "gaussian_acc@0.1": {"shape": [10, 797], "bits": "…"}, …}}

Each metric's value is the mean of its unpacked outcomes (a Gaussian metric's are draws × samples). 797 samples
take 100 bytes per metric (136 in base64). :func:`unpack_outcomes` reads them back; ``robustlab check`` pairs the two
sides sample by sample when their ``test_set`` fingerprints agree.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

OUTCOMES_KEY = "outcomes"


def fingerprint_test_set(x: torch.Tensor, y: torch.Tensor) -> str:
    """``sha256:<hex>`` of the test inputs (float32) and labels (int64), in order: equal only for the same samples."""
    digest = hashlib.sha256()
    for tensor, dtype in ((x, torch.float32), (y, torch.int64)):
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu", dtype).contiguous().numpy().tobytes())
    return f"sha256:{digest.hexdigest()}"


def pack_mask(mask: torch.Tensor | np.ndarray) -> dict[str, Any]:
    """A boolean array (any shape) as ``{"shape": [...], "bits": base64(numpy.packbits(mask.ravel()))}``."""
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    array = array.astype(bool)
    bits = np.packbits(array.ravel())
    return {"shape": list(array.shape), "bits": base64.b64encode(bits.tobytes()).decode("ascii")}


def unpack_mask(packed: Mapping[str, Any]) -> np.ndarray:
    """The boolean array :func:`pack_mask` stored.

    Raises:
        ValueError: not a packed mask (missing keys, bad base64, too few bits for the shape).
    """
    try:
        shape = tuple(int(s) for s in packed["shape"])
        raw = np.frombuffer(base64.b64decode(packed["bits"], validate=True), dtype=np.uint8)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a packed outcome mask: {exc}") from None
    count = int(np.prod(shape)) if shape else 1
    if raw.size * 8 < count or raw.size > (count + 7) // 8:
        raise ValueError(f"packed mask holds {raw.size} bytes, shape {list(shape)} needs {(count + 7) // 8}")
    return np.unpackbits(raw, count=count).astype(bool).reshape(shape)


def pack_outcomes(masks: Mapping[str, torch.Tensor], fingerprint: str) -> dict[str, Any]:
    """``info.outcomes`` from ``metric name → boolean tensor`` (the last axis is the test sample)."""
    sizes = {name: int(mask.shape[-1]) for name, mask in masks.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"per-sample outcomes of different lengths: {sizes}")
    n = next(iter(sizes.values()), 0)
    return {"n": n, "test_set": fingerprint, "metrics": {name: pack_mask(m) for name, m in masks.items()}}


def unpack_outcomes(outcomes: Mapping[str, Any]) -> tuple[str | None, dict[str, np.ndarray]]:
    """``(test_set fingerprint, metric → boolean array)`` from ``info.outcomes``.

    Raises:
        ValueError: malformed outcomes.
    """
    metrics = outcomes.get("metrics") if isinstance(outcomes, Mapping) else None
    if not isinstance(metrics, Mapping):
        raise ValueError("outcomes have no 'metrics' object")
    fingerprint = outcomes.get("test_set")
    return (str(fingerprint) if fingerprint else None), {str(k): unpack_mask(v) for k, v in metrics.items()}


__all__ = ["OUTCOMES_KEY", "pack_mask", "pack_outcomes", "fingerprint_test_set", "unpack_mask", "unpack_outcomes"]
