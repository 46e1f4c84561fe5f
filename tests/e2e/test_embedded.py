"""End to end on the embedded default: SQLite database + kombu's SQLAlchemy transport on SQLite (no Redis)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_helpers import Stack, record_timing, start_services, tiny_spec

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def embedded_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("embedded")
    stack = start_services(f"sqlite:///{workdir / 'robustlab.db'}", f"sqla+sqlite:///{workdir / 'broker.db'}", workdir)
    yield stack
    stack.stop()


def test_embedded_job_runs_through_the_queue(embedded_stack: Stack) -> None:
    start = time.monotonic()
    job = embedded_stack.submit(tiny_spec("e2e-embedded"))
    done = embedded_stack.wait(job["id"], timeout=120)
    record_timing(backend="sqlite+sqla-broker", what="submit->succeeded", seconds=round(time.monotonic() - start, 2))
    assert done["status"] == "succeeded", done.get("error")
    with embedded_stack.client() as c:
        results = c.get(f"/api/v1/jobs/{job['id']}/results").json()
        board = c.get("/api/v1/leaderboard").json()
        health = c.get("/healthz").json()
    assert {"clean_acc", "pgd_linf_acc@0.05", "certified_l2_acc@0.05"} <= set(results["metrics"])
    assert [e["job_id"] for e in board["entries"]] == [job["id"]]
    assert board["entries"][0]["value"] == results["metrics"]["clean_acc"]
    assert health["status"] == "ok"
    assert (embedded_stack.artifacts_dir / job["id"] / "model.safetensors").exists()


def test_concurrent_submissions_while_the_worker_writes(embedded_stack: Stack) -> None:
    """SQLite is written by the API (new jobs, enqueue) and the worker (claims, progress, results) at once."""
    from concurrent.futures import ThreadPoolExecutor

    quick = {"gaussian": {"sigmas": [0.1], "repeats": 1}}
    specs = [tiny_spec(f"e2e-embedded-burst-{i}", train={"epochs": 5, "lr": 0.02}, evaluate=quick) for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        submitted = list(pool.map(embedded_stack.submit, specs))
    finished = [embedded_stack.wait(job["id"], timeout=120) for job in submitted]
    assert [job["status"] for job in finished] == ["succeeded"] * 8, [job["error"] for job in finished]
    assert "database is locked" not in embedded_stack.tail(10_000)
