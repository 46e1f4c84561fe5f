"""``robustlab worker --gpus 0,1``: one Celery worker process per GPU, each pinned to its GPU.

Every worker is started with ``CUDA_VISIBLE_DEVICES=<its GPU>`` in its environment, so inside it torch sees one
device, ``cuda:0``, and a ``device: "cuda"`` job runs there; it listens on the ``gpu`` queue (where
:meth:`core.spec.JobSpec.queue` sends ``device: "cuda"`` jobs), runs one job at a time (``--concurrency 1``: one
job per GPU) and is named ``gpu<id>@<host>`` (the job's ``worker`` column says which GPU ran it). Each worker is
a process group of its own (:func:`cli.processes.start_group`: it gets SIGTERM if this process dies).

This process supervises them: a stop signal (Ctrl-C, SIGTERM, SIGHUP) stops them all (warm shutdown, then SIGKILL
after the grace period); if one exits, the others are stopped too and its exit status is returned, so that a
service manager restarts the set as one.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

_GPU_ID = re.compile(r"^(\d+|(GPU|MIG)-[0-9A-Za-z-]+)$")  # CUDA_VISIBLE_DEVICES: an index or a UUID


class GpuListError(ValueError):
    """``--gpus`` does not name GPUs (the message says why)."""


@dataclass(frozen=True)
class GpuWorker:
    """One worker of ``--gpus``: its GPU, its command line and its environment."""

    gpu: str
    command: list[str]
    env: dict[str, str]

    @property
    def node(self) -> str:
        return self.command[self.command.index("-n") + 1]


def parse_gpus(text: str, device_count: int | None = None) -> list[str]:
    """``"0,1"`` → ``["0", "1"]``: indices (or ``GPU-…`` / ``MIG-…`` UUIDs), no duplicates; ``"all"`` → every one
    of ``device_count``. With ``device_count`` (what torch sees) an index beyond it is an error.

    Raises:
        GpuListError: empty, malformed, duplicated, or a GPU this machine does not have.
    """
    text = text.strip()
    if text == "all":
        if not device_count:
            raise GpuListError("--gpus all: torch sees no CUDA device on this machine")
        return [str(i) for i in range(device_count)]
    gpus = [part.strip() for part in text.split(",")]
    if not text or any(not g for g in gpus):
        raise GpuListError(f"--gpus {text!r}: a comma-separated list of GPU indices (e.g. 0,1) or 'all'")
    bad = [g for g in gpus if not _GPU_ID.match(g)]
    if bad:
        raise GpuListError(f"--gpus: {', '.join(map(repr, bad))} is not a GPU index or UUID")
    if len(set(gpus)) != len(gpus):
        raise GpuListError(f"--gpus {text}: each GPU once (one worker per GPU)")
    if device_count == 0:
        raise GpuListError("--gpus: torch sees no CUDA device on this machine (a CPU build of torch, or no driver)")
    if device_count is not None:
        missing = [g for g in gpus if g.isdigit() and int(g) >= device_count]
        if missing:
            raise GpuListError(
                f"--gpus: GPU {', '.join(missing)} not found: torch sees {device_count} CUDA device(s) here"
            )
    return gpus


def gpu_workers(
    gpus: Sequence[str],
    base_command: Callable[[str, int], list[str]],
    queues: str = "gpu",
    concurrency: int = 1,
    environ: dict[str, str] | None = None,
) -> list[GpuWorker]:
    """The worker of each GPU: ``base_command(queues, concurrency)`` (the plain ``robustlab worker`` command) with
    its node name ``gpu<id>@%h`` added, and ``environ`` (default: this process's) with ``CUDA_VISIBLE_DEVICES``
    set to the GPU. Where ``environ`` already restricts the GPUs (``CUDA_VISIBLE_DEVICES=2,3``), an index counts
    among those (``--gpus 0`` is GPU 2), as torch in this process numbers them."""
    base_env = dict(os.environ if environ is None else environ)
    visible = [v.strip() for v in base_env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    out = []
    for gpu in gpus:
        pinned = visible[int(gpu)] if visible and gpu.isdigit() and int(gpu) < len(visible) else gpu
        command = [*base_command(queues, concurrency), "-n", f"gpu{re.sub(r'[^0-9A-Za-z]', '', gpu)}@%h"]
        out.append(GpuWorker(pinned, command, {**base_env, "CUDA_VISIBLE_DEVICES": pinned}))
    return out


def start_workers(workers: Sequence[GpuWorker], **popen) -> list[subprocess.Popen]:
    """Start each worker in a process group of its own (SIGTERM when this process dies)."""
    from cli.processes import start_group

    return [start_group(w.command, env=w.env, **popen) for w in workers]


def supervise(procs: Sequence[subprocess.Popen], poll_seconds: float = 0.5) -> int:
    """Wait until one worker exits; then stop the others (:func:`cli.processes.stop_group`) and return its exit
    status. A stop signal (within :func:`cli.processes.exit_on_signals`) stops them all as well."""
    from cli.processes import stop_group

    code = 0
    try:
        while True:
            exited = [p for p in procs if p.poll() is not None]
            if exited:
                code = exited[0].returncode
                return code if code >= 0 else 128 - code  # killed by a signal: 128 + its number, as a shell says
            time.sleep(poll_seconds)
    finally:
        for proc in procs:
            stop_group(proc)


__all__ = ["GpuListError", "GpuWorker", "gpu_workers", "parse_gpus", "start_workers", "supervise"]
