"""The device a job runs on: which one, the facts ``result.json`` records about it, and running out of its memory.

* :func:`resolve_device`: ``spec.device`` (``auto`` / ``cpu`` / ``cuda``) → a ``torch.device``.
* :class:`DeviceFacts`: ``info["hardware"]`` — the device, the GPU's name and total memory, the peak GPU memory the
  job allocated (``torch.cuda.max_memory_allocated``, reset when the job starts), the torch, CUDA and cuDNN
  versions, and ``CUDA_VISIBLE_DEVICES`` (the GPU a ``robustlab worker --gpus`` process was pinned to).
* :func:`naming_the_batch`: turns an out-of-memory error (``torch.OutOfMemoryError``, CUDA's; or the CPU
  allocator's) into :class:`OutOfMemory`, whose message names the phase, the spec's batch size that failed and the
  size of the forward pass that was running. The worker stores it as the job's error: a job that does not fit is
  failed at once, never retried (another attempt would run out of memory the same way).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class OutOfMemory(RuntimeError):
    """The job ran out of device memory; the message names the batch size to lower."""


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("spec asks for device 'cuda' but this worker has no CUDA device")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


class DeviceFacts:
    """``start()`` when the job starts (resets CUDA's peak-memory counter), ``as_dict()`` at its end."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def as_dict(self) -> dict:
        facts: dict = {
            "device": str(self.device),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,  # None: a CPU build of torch
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "cpu_threads": torch.get_num_threads(),
        }
        if self.device.type == "cuda":
            props = torch.cuda.get_device_properties(self.device)
            facts.update(
                gpu_name=props.name,
                gpu_memory_total_bytes=int(props.total_memory),
                gpu_memory_peak_bytes=int(torch.cuda.max_memory_allocated(self.device)),
                gpu_memory_peak_reserved_bytes=int(torch.cuda.max_memory_reserved(self.device)),
                gpu_capability=".".join(map(str, torch.cuda.get_device_capability(self.device))),
            )
        return facts


class BatchWatch:
    """A forward pre-hook on the model that remembers the batch size (first dimension of the first tensor input)
    of the latest forward pass: when memory runs out, the error says how large the failing pass was."""

    def __init__(self, model: nn.Module) -> None:
        self.last: int | None = None
        self.handle = model.register_forward_pre_hook(self._record, prepend=True)  # before any hook that raises

    def _record(self, _module: nn.Module, inputs: tuple) -> None:
        if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].dim() > 0:
            self.last = int(inputs[0].shape[0])

    def remove(self) -> None:
        self.handle.remove()


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's ``torch.OutOfMemoryError``, or the CPU allocator's failure (a plain ``RuntimeError``)."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(exc)
    )


@contextmanager
def naming_the_batch(phase: str, setting: str, batch_size: int, watch: BatchWatch | None) -> Iterator[None]:
    """Within the block an out-of-memory error becomes :class:`OutOfMemory`: ``"CUDA out of memory while
    training at batch size 512 (train.batch_size; the failing forward pass had 512 inputs) on cuda:0 …"``."""
    try:
        yield
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        where = "CUDA" if isinstance(exc, torch.OutOfMemoryError) else "CPU"
        running = f"; the failing forward pass had {watch.last} inputs" if watch and watch.last else ""
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()
        raise OutOfMemory(
            f"{where} out of memory while {phase} at batch size {batch_size} ({setting}{running}); "
            f"lower {setting} and submit again. {first_line}"
        ) from exc


__all__ = ["BatchWatch", "DeviceFacts", "OutOfMemory", "is_out_of_memory", "naming_the_batch", "resolve_device"]
