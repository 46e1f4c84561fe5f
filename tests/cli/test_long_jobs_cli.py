"""The CLI of long jobs (issue 14): ``robustlab worker --gpus`` (one Celery worker per GPU, pinned with
``CUDA_VISIBLE_DEVICES``, on the ``gpu`` queue) and ``robustlab run --resume``.

There is no GPU on this machine, so CUDA itself is not exercised: the workers are real Celery processes started by
the same code as ``--gpus`` (:mod:`cli.gpu_workers`), and the test reads their environment and command line from
``/proc``, sends them a ``device: "cuda"`` job through the broker (it reaches one of them, which fails it: no CUDA
here), and kills one to see the supervisor stop the other. ``robustlab worker --gpus`` itself, run here, refuses
to start (exit 2): torch sees no CUDA device.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from service_helpers import REPO, service_env, tiny_spec

from cli.gpu_workers import GpuListError, gpu_workers, parse_gpus, start_workers, supervise
from cli.service import _worker_command
from core.config import Settings
from core.spec import JobSpec
from db import jobs
from db.session import session_scope

sys.path.insert(0, str(Path(__file__).parent))
from test_cli import robustlab, write  # noqa: E402


@pytest.mark.parametrize(
    ("text", "count", "expected"),
    [("0,1", 2, ["0", "1"]), (" 1 ", 4, ["1"]), ("all", 3, ["0", "1", "2"]), ("GPU-8a1b-33", 1, ["GPU-8a1b-33"])],
)
def test_gpu_lists(text: str, count: int, expected: list[str]) -> None:
    assert parse_gpus(text, count) == expected


@pytest.mark.parametrize(
    ("text", "count", "message"),
    [
        ("", 2, "comma-separated list"),
        ("0,,1", 2, "comma-separated list"),
        ("0,0", 2, "each GPU once"),
        ("zero", 2, "'zero' is not a GPU index"),
        ("0,2", 2, "GPU 2 not found: torch sees 2"),
        ("0", 0, "torch sees no CUDA device"),
        ("all", 0, "torch sees no CUDA device"),
    ],
)
def test_bad_gpu_lists(text: str, count: int, message: str) -> None:
    with pytest.raises(GpuListError, match=message):
        parse_gpus(text, count)


def test_an_index_counts_among_the_gpus_already_visible() -> None:
    workers = gpu_workers(["0", "1"], lambda q, c: ["celery", "-Q", q], environ={"CUDA_VISIBLE_DEVICES": "2,3"})
    assert [w.env["CUDA_VISIBLE_DEVICES"] for w in workers] == ["2", "3"] and workers[0].node == "gpu0@%h"


def test_worker_gpus_refuses_without_cuda(tmp_path: Path) -> None:
    env = service_env(f"sqlite:///{tmp_path / 'unused.db'}", "memory://", tmp_path / "artifacts")
    proc = robustlab("worker", "--gpus", "0,1", env=env, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "torch sees no CUDA device" in proc.stderr


def _proc_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _proc_argv(pid: int) -> list[str]:
    return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_one_pinned_worker_per_gpu_on_the_gpu_queue(sqlite_url: str, redis_url: str, tmp_path: Path) -> None:
    env = service_env(sqlite_url, redis_url, tmp_path / "artifacts")
    workers = gpu_workers(["0", "1"], lambda q, c: _worker_command(q, c, "solo"), environ=env)
    logs = [tmp_path / f"gpu{w.gpu}.log" for w in workers]
    outs = [log.open("wb") for log in logs]
    procs = [
        start_workers([w], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)[0]
        for w, out in zip(workers, outs, strict=True)
    ]
    try:
        deadline = time.monotonic() + 120
        while not all(b" ready." in log.read_bytes() for log in logs):
            assert all(p.poll() is None for p in procs), "\n".join(log.read_text() for log in logs)
            assert time.monotonic() < deadline, "GPU workers not ready"
            time.sleep(0.2)
        for gpu, proc, log in zip(["0", "1"], procs, logs, strict=True):
            assert _proc_env(proc.pid)["CUDA_VISIBLE_DEVICES"] == gpu
            argv = _proc_argv(proc.pid)
            assert argv[argv.index("-Q") + 1] == "gpu" and argv[argv.index("--concurrency") + 1] == "1"
            assert argv[argv.index("-n") + 1] == f"gpu{gpu}@%h"
            text = log.read_text()
            assert ".> gpu " in text and ".> cpu " not in text  # Celery's banner lists the queues it consumes

        # a device "cuda" job is routed to the gpu queue (JobSpec.queue()) and one of these workers takes it
        from api.dispatch import Dispatcher

        with session_scope(sqlite_url) as s:
            job = jobs.create_job(s, JobSpec.model_validate(tiny_spec("on-a-gpu", device="cuda")))
            job_id, queue = job.id, JobSpec.model_validate(job.spec).queue()
        assert queue == "gpu" and Dispatcher(Settings(database_url=sqlite_url, broker_url=redis_url)).enqueue(
            job_id, queue
        )
        deadline = time.monotonic() + 60
        while True:
            with session_scope(sqlite_url) as s:
                job = jobs.get_job(s, job_id)
                status, worker, error = job.status, job.worker, job.error
            if status in ("failed", "succeeded") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status == "failed" and worker.split("@")[0] in ("gpu0", "gpu1"), (status, worker)
        assert "has no CUDA device" in error  # what a pinned worker says on a machine without a GPU

        # one worker dies: the supervisor stops the other and returns the dead one's status
        os.killpg(procs[0].pid, signal.SIGKILL)
        assert supervise(procs, poll_seconds=0.1) == 128 + signal.SIGKILL
        assert all(p.poll() is not None for p in procs)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for out in outs:
            out.close()


def test_run_resume_keeps_checkpoints_in_the_output_directory(tmp_path: Path) -> None:
    """``--resume`` gives the run a checkpoint directory, ``OUT/checkpoints`` (run_job resuming from it: the
    in-process tests in tests/evaluation/test_checkpoints.py); a finished run keeps its final checkpoint."""
    env = service_env(f"sqlite:///{tmp_path / 'unused.db'}", "memory://", tmp_path / "artifacts")
    spec = tiny_spec("cli-resume", train={"epochs": 4, "lr": 0.02}, evaluate={"gaussian": {"sigmas": [0.0]}})
    out = tmp_path / "out"
    proc = robustlab("run", str(write(tmp_path / "spec.json", spec)), "--out", str(out), "--resume", env=env)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    info = json.loads((out / "result.json").read_text())["info"]
    assert info["checkpoints"] == {"every": 1, "resumed_from": None, "refused": [], "kept": ["epoch-000004.pt"]}
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["epoch-000004.pt"]


def test_the_progress_line_says_where_a_resumed_job_went_on_from() -> None:
    import io

    from rich.console import Console

    from cli.display import JobProgress

    with JobProgress(Console(file=io.StringIO(), force_terminal=False), title="job") as display:
        display.update({"phase": "train", "epoch": 21, "epochs": 300, "loss": 0.5, "resumed_from": 20})
        detail = display.progress.tasks[0].fields["detail"]
    assert detail == "loss 0.5 · resumed from epoch 20"
