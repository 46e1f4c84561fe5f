"""Helpers for the service tests: tiny specs, and a real API + worker started as subprocesses.

``start_services(database_url, broker_url, workdir)`` migrates the database, starts ``uvicorn api.main:app`` on a
free port and ``celery -A worker.celery_app worker -Q cpu -P solo`` with ``ROBUSTLAB_*`` set, and waits until
``/healthz`` answers 200. ``Stack.stop()`` kills both (process groups).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
TERMINAL = {"succeeded", "failed", "cancelled"}


def tiny_spec(name: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A spec that trains and evaluates in a few seconds on one CPU thread."""
    spec: dict[str, Any] = {
        "name": name or f"tiny-{uuid.uuid4().hex[:8]}",
        "dataset": {"name": "spirals", "n_train": 100, "n_test": 100},
        "model": {"family": "explicit", "width": 8, "depth": 4, "h": 0.2},
        "train": {"epochs": 30, "lr": 0.02},
        "evaluate": {
            "gaussian": {"sigmas": [0, 0.1], "repeats": 2},
            "pgd": {"norm": ["Linf", "L2"], "eps": [0.05], "steps": 10},
            "certified": {"eps": [0.05]},
        },
    }
    spec.update(overrides)
    return spec


def worker_provenance() -> dict[str, Any]:
    """The provenance part of the ``info`` a worker of this checkout stores (code identity, protocol version): a job
    completed with it is current, not stale."""
    from core.protocol import current_protocol
    from core.provenance import current_code

    return {"versions": {"robustlab": current_code().identity}, "provenance": {"protocol_version": current_protocol()}}


def diverging_spec(name: str | None = None) -> dict[str, Any]:
    """Plain SGD with lr = 1000 (the largest the spec accepts) makes the loss NaN within a few epochs."""
    return tiny_spec(name or f"diverge-{uuid.uuid4().hex[:8]}", train={"epochs": 30, "lr": 1000, "optimizer": "sgd"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(database_url: str, broker_url: str, artifacts_dir: Path, server_url: str = "") -> dict[str, str]:
    """The environment of a service process (and of CLI subprocesses talking to it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROBUSTLAB_")}
    env.update(
        ROBUSTLAB_DATABASE_URL=database_url,
        ROBUSTLAB_BROKER_URL=broker_url,
        ROBUSTLAB_ARTIFACTS_DIR=str(artifacts_dir),
        ROBUSTLAB_TORCH_THREADS="1",  # tiny jobs; the cores are shared by the API, the worker and pytest
        ROBUSTLAB_PROGRESS_INTERVAL="0.2",
        ROBUSTLAB_LEASE_SECONDS="15",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    if server_url:
        env["ROBUSTLAB_SERVER_URL"] = server_url
    return env


@dataclass
class Stack:
    """A running API + worker pair."""

    base_url: str
    database_url: str
    broker_url: str
    artifacts_dir: Path
    env: dict[str, str]
    logs: dict[str, Path] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30)

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        with self.client() as c:
            r = c.post("/api/v1/jobs", json=spec)
        assert r.status_code == 201, r.text
        return r.json()

    def wait(self, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Poll until the job is finished; fail early (with the logs) if a service process died."""
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while True:
                job = c.get(f"/api/v1/jobs/{job_id}").json()
                if job["status"] in TERMINAL:
                    return job
                if time.monotonic() > deadline:
                    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s\n{self.tail()}")
                for name, proc in self.procs.items():
                    if proc.poll() is not None:
                        raise AssertionError(f"{name} exited with {proc.returncode}\n{self.tail()}")
                time.sleep(0.1)

    def tail(self, lines: int = 60) -> str:
        out = []
        for name, path in self.logs.items():
            text = path.read_text(errors="replace").splitlines() if path.exists() else []
            out.append(f"----- {name} ({path}) -----\n" + "\n".join(text[-lines:]))
        return "\n".join(out)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def start_services(database_url: str, broker_url: str, workdir: Path, health_timeout: float = 90.0) -> Stack:
    """Migrate ``database_url``, start the API and one worker; wait until ``/healthz`` is 200 and the worker is
    ready (it has loaded the job runner), so that timings measure jobs, not start-up."""
    from db.migrate import upgrade

    upgrade(database_url)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    artifacts = workdir / "artifacts"
    env = service_env(database_url, broker_url, artifacts, base_url)
    node = f"test-{uuid.uuid4().hex[:6]}@%h"
    commands = {
        "api": [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port)],
        "worker": [
            sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", "cpu", "--concurrency", "1",
            "-P", "solo", "--loglevel", "INFO", "-n", node, "--without-gossip", "--without-mingle",
        ],
    }  # fmt: skip
    stack = Stack(base_url, database_url, broker_url, artifacts, env)
    for name, command in commands.items():
        log = workdir / f"{name}.log"
        stack.logs[name] = log
        with log.open("wb") as out:
            stack.procs[name] = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
    deadline = time.monotonic() + health_timeout
    last = ""
    while time.monotonic() < deadline:
        for name, proc in stack.procs.items():
            if proc.poll() is not None:
                stack.stop()
                raise RuntimeError(f"{name} exited with {proc.returncode} during start-up\n{stack.tail()}")
        try:
            r = httpx.get(f"{base_url}/healthz", timeout=5)
            if r.status_code == 200 and b" ready." in stack.logs["worker"].read_bytes():
                return stack
            last = r.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    stack.stop()
    raise RuntimeError(f"API + worker not ready after {health_timeout} s: {last}\n{stack.tail()}")


def record_timing(**row: Any) -> None:
    """Append a timing row to test-output/service-timings.jsonl (and print it: shown with ``pytest -s``)."""
    out = REPO / "test-output"
    out.mkdir(exist_ok=True)
    with (out / "service-timings.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"[timing] {row}")


# ---------------------------------------------------------------------------------------------------- Redis index
#: set with NX on a Redis db index by the test session that uses it; other sessions (a CI run beside a local run)
#: try the next index instead of flushing ours
LOCK_KEY = "robustlab:test-session:owner"
LOCK_TTL_S = 900


class Broker:
    """A Redis db index this test session holds: ``url`` for the services, ``client`` for the test, ``flush()``
    to lose every message, ``release()`` at the end."""

    def __init__(self, url: str, token: str) -> None:
        import redis

        self.url, self.token = url, token
        self.client = redis.Redis.from_url(url, socket_connect_timeout=3)

    def flush(self) -> None:
        """``FLUSHDB`` on this index only (what a Redis restart without persistence does to the queues), and the
        lock put back in the same transaction (no other session can take the index in between); fails if another
        session holds the index."""
        import pytest
        import redis

        with self.client.pipeline() as pipe:
            pipe.watch(LOCK_KEY)
            owner = pipe.get(LOCK_KEY)
            if owner not in (None, self.token.encode()):
                pytest.fail(f"{self.url}: another test session took this Redis index ({LOCK_KEY} = {owner!r})")
            pipe.multi()
            pipe.flushdb()
            pipe.set(LOCK_KEY, self.token, ex=LOCK_TTL_S)
            try:
                pipe.execute()
            except redis.WatchError:
                pytest.fail(f"{self.url}: another test session took this Redis index")

    def release(self) -> None:
        self.client.flushdb()  # the lock key with it
        self.client.close()


def claim_redis_index(base: str, candidates: list[str], unavailable) -> Broker:
    """The first db index of ``candidates`` on the Redis at ``base`` that no other test session holds, flushed and
    locked for this one. ``unavailable(reason)`` skips (or fails in CI) when Redis is not reachable."""
    import pytest
    import redis

    token = uuid.uuid4().hex
    try:
        for index in candidates:
            client = redis.Redis.from_url(f"{base}/{index.strip()}", socket_connect_timeout=3)
            if client.set(LOCK_KEY, token, nx=True, ex=LOCK_TTL_S):
                client.close()
                broker = Broker(f"{base}/{index.strip()}", token)
                broker.flush()
                return broker
            client.close()
    except redis.RedisError as exc:
        unavailable(f"Redis not reachable at {base}: {exc}")
    pytest.fail(f"every Redis db index in {candidates} is in use by another test session ({LOCK_KEY} is set)")


@contextmanager
def in_process_apps() -> Iterator[Callable[[Any], Any]]:
    """``start(settings)`` → a started FastAPI ``TestClient`` of ``create_app(settings)`` (no recovery sweeper);
    every client started in the block is closed when it ends."""
    from fastapi.testclient import TestClient

    from api.main import create_app

    clients: list[TestClient] = []

    def start(settings: Any) -> TestClient:
        client = TestClient(create_app(settings, recovery=False))
        client.__enter__()
        clients.append(client)
        return client

    try:
        yield start
    finally:
        for client in clients:
            client.__exit__(None, None, None)
