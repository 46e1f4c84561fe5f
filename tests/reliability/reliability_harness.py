"""Processes and probes for the fault tests: API and worker subprocesses that a test kills and restarts for real.

``Services`` extends :class:`service_helpers.Stack`: every process runs in its own process group (so
``os.killpg`` takes a Celery worker with its prefork children), logs go to ``<workdir>/<name>.log`` (appended on a
restart), and a killed process leaves ``procs`` (so ``wait()`` only watches the ones meant to be alive) but keeps
its log. ``stop()`` SIGKILLs every group that is left: the fixture calls it even when the test fails.

Helpers read the truth from the database (result rows per job) and from the logs (how often a job was claimed and
stored), independently of the API under test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from service_helpers import REPO, Stack, free_port, service_env, tiny_spec
from sqlalchemy import func, select

from db.models import Result
from db.session import session_scope

#: short leases and sweeps, so that a lost worker is noticed within seconds (the defaults are 60 s and 30 s)
FAST_RECOVERY = {
    "ROBUSTLAB_LEASE_SECONDS": "3",
    "ROBUSTLAB_RECOVERY_INTERVAL": "1",
    "ROBUSTLAB_PROGRESS_INTERVAL": "0.2",
}


def long_spec(name: str, epochs: int = 600) -> dict[str, Any]:
    """Trains for 1-2 s on an idle core (2-3 ms per epoch; several times that under load): long enough to be
    killed mid-way, as progress reports come every 0.2 s."""
    return tiny_spec(name, train={"epochs": epochs, "lr": 0.02})


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when pytest dies (even by SIGKILL, when no teardown runs; Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Services(Stack):
    """API and worker processes of one test, started, killed and restarted by name."""

    workdir: Path = field(default_factory=Path)
    port: int = 0
    killed: dict[str, list[float]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request of client() (an API key)

    @classmethod
    def create(cls, workdir: Path, database_url: str, broker_url: str, **env: str) -> Services:
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        artifacts = workdir / "artifacts"
        full_env = service_env(database_url, broker_url, artifacts, base_url) | env
        return cls(base_url, database_url, broker_url, artifacts, full_env, workdir=workdir, port=port)

    # ------------------------------------------------------------------------------------------------ processes
    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        assert name not in self.procs or self.procs[name].poll() is not None, f"{name} is already running"
        log = self.workdir / f"{name}.log"
        self.logs[name] = log
        with log.open("ab") as out:
            out.write(f"\n===== start {name} at {time.time():.3f} =====\n".encode())
            out.flush()
            proc = subprocess.Popen(
                command,
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killpg takes a worker with its pool children
                preexec_fn=_die_with_parent,
            )
        self.procs[name] = proc
        return proc

    def start_api(self, name: str = "api") -> subprocess.Popen:
        """``uvicorn api.main:app`` on this stack's fixed port (a restarted API comes back at the same URL)."""
        command = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(self.port)]
        return self._spawn(name, command)

    def start_worker(self, name: str = "worker", pool: str = "solo") -> subprocess.Popen:
        """A Celery worker on the ``cpu`` queue, node name ``<name>-<hex>@<host>``, one job at a time. ``pool``
        ``prefork`` runs the job in a forked child (the case ``task_reject_on_worker_lost`` is about)."""
        node = f"{name}-{uuid.uuid4().hex[:6]}@%h"
        command = [
            sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", "cpu", "--concurrency", "1",
            "-P", pool, "--loglevel", "INFO", "-n", node, "--without-gossip", "--without-mingle",
            "--without-heartbeat",
        ]  # fmt: skip
        return self._spawn(name, command)

    def wait_ready(self, *names: str, timeout: float = 90.0) -> None:
        """Until the API answers ``/healthz`` with 200 and each worker has logged `` ready.`` (runner preloaded)."""
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending:
            for name in sorted(pending):
                proc = self.procs[name]
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} during start-up\n{self.tail()}")
                if name.startswith("api"):
                    try:
                        ok = httpx.get(f"{self.base_url}/healthz", timeout=5).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                else:
                    ok = b" ready." in self.section(name).encode()
                if ok:
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"{sorted(pending)} not ready after {timeout} s\n{self.tail()}")
            time.sleep(0.1)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> float:
        """Send ``sig`` to the whole process group of ``name`` (a worker and its pool children) and reap it."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, sig)
        proc.wait(timeout=30)
        when = time.monotonic()
        self.killed.setdefault(name, []).append(when)
        return when

    def stop(self) -> None:
        """SIGKILL every process group still running (teardown: fast, and sure to leave nothing behind)."""
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait(timeout=30)
            del self.procs[name]

    # ------------------------------------------------------------------------------------------------ probes
    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30, headers=self.headers)

    def section(self, name: str) -> str:
        """The log of ``name`` since its last start."""
        path = self.logs.get(name)
        text = path.read_text(errors="replace") if path is not None and path.exists() else ""
        return text.rsplit(f"===== start {name} at ", 1)[-1]

    def log_text(self, prefix: str = "") -> str:
        """All logs whose process name starts with ``prefix``, every start included."""
        return "\n".join(p.read_text(errors="replace") for n, p in self.logs.items() if n.startswith(prefix))

    def wait_for_log(self, prefix: str, pattern: str, timeout: float = 15.0) -> str:
        """Until ``pattern`` (a regex) appears in the logs of the processes named ``prefix*``; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text(prefix)
            if re.search(pattern, text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not in the {prefix}* logs after {timeout} s\n{self.tail()}")
            time.sleep(0.1)

    def get_job(self, job_id: str) -> dict[str, Any]:
        with self.client() as c:
            r = c.get(f"/api/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait_until(
        self, job_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60.0, what: str = ""
    ) -> dict[str, Any]:
        """Poll ``GET /jobs/{id}`` until ``predicate(job)``; fail early if a process meant to run has died."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if predicate(job):
                return job
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited with {proc.returncode}\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"job {job_id} not {what or 'as expected'} after {timeout} s: {job}\n{self.tail()}"
                )
            time.sleep(0.05)


def training_past(epoch: int) -> Callable[[dict[str, Any]], bool]:
    def predicate(job: dict[str, Any]) -> bool:
        progress = job.get("progress") or {}
        return job["status"] == "running" and progress.get("phase") == "train" and progress.get("epoch", 0) >= epoch

    return predicate


def result_rows(database_url: str, job_id: str) -> tuple[int, int]:
    """``(rows, distinct metric names)`` stored for ``job_id``: equal when no result is duplicated."""
    with session_scope(database_url) as s:
        rows = s.scalar(select(func.count()).select_from(Result).where(Result.job_id == job_id))
        names = s.scalar(select(func.count(func.distinct(Result.name))).where(Result.job_id == job_id))
    return rows or 0, names or 0


def count_in_log(text: str, pattern: str) -> int:
    return len(re.findall(pattern, text))


def assert_finished_once(services: Services, job: dict[str, Any], attempts: int) -> dict[str, float]:
    """The job succeeded, was claimed ``attempts`` times (once per run), stored exactly one outcome, and its
    result rows are unique per metric name and match ``GET /results``."""
    job_id = job["id"]
    assert job["status"] == "succeeded" and job["error"] is None, job
    assert job["attempts"] == attempts, job
    # the API can show "succeeded" a moment before the worker, back from its commit, writes its log line
    logs = services.wait_for_log("worker", rf"job {job_id}: succeeded", timeout=30)
    stored = count_in_log(logs, rf"job {job_id}: succeeded")
    assert stored == 1, f"the job was stored {stored} times"
    assert count_in_log(logs, rf"job {job_id} \([^)]*\): claimed by") == attempts
    with services.client() as c:
        results = c.get(f"/api/v1/jobs/{job_id}/results").json()
    rows, names = result_rows(services.database_url, job_id)
    assert rows == names == len(results["metrics"]) > 0, (rows, names, results)
    return results["metrics"]


def queue_messages(redis_client, queue: str = "cpu") -> list[str]:
    """The task ids (job ids) of the messages waiting in a kombu Redis queue (a list of JSON envelopes)."""
    return [json.loads(raw)["headers"]["id"] for raw in redis_client.lrange(queue, 0, -1)]
