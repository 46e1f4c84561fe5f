"""Mixed precision of training (``train.amp``): ``torch.autocast`` around each training step's forward passes and
loss, with a ``GradScaler`` for float16, on CUDA only.

Nothing else runs under autocast: the loss is taken in float32 (:func:`evaluation.training.losses.full_precision`),
the gradients, optimizer and schedule are the parameters' float32, and the context closes before the backward
pass. The accuracy pass after training, every evaluation and every certificate (Lipschitz bounds in float64,
margins of float32 logits) run after :func:`evaluation.training.train_classifier` has returned, outside any
autocast context: a test records the autocast state of every forward pass.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class AmpIgnored(RuntimeWarning):
    """``train.amp`` on a job that landed on a CPU (``device: "auto"``): trained in full precision (the runner
    records the warning in the result)."""


@dataclass
class Precision:
    """How training steps run: ``dtype`` None is full precision; else autocast to ``dtype`` on ``device_type``,
    with ``scaler`` (float16) scaling the loss so small gradients survive."""

    dtype: torch.dtype | None = None
    device_type: str = "cpu"
    scaler: torch.amp.GradScaler | None = None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def training_precision(amp: str | None, device: torch.device) -> Precision:
    """The precision of ``train.amp`` on ``device``: autocast (+ GradScaler for fp16) on CUDA; on any other device
    full precision, with an :class:`AmpIgnored` warning (the spec refuses ``amp`` with ``device: "cpu"``; this is
    ``device: "auto"`` on a worker without CUDA)."""
    if amp is None:
        return Precision(device_type=device.type)
    if device.type != "cuda":
        warnings.warn(
            f"train.amp {amp!r} ignored: the job runs on {device.type}, mixed precision needs CUDA; trained in "
            "full precision (float32)",
            AmpIgnored,
            stacklevel=2,
        )
        return Precision(device_type=device.type)
    dtype = AMP_DTYPES[amp]
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    return Precision(dtype, device.type, scaler)


__all__ = ["AMP_DTYPES", "AmpIgnored", "Precision", "training_precision"]
