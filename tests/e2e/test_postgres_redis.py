"""End to end on PostgreSQL + Redis: HTTP → API process → Redis → Celery worker process → PostgreSQL."""

from __future__ import annotations

import json
import time

import pytest
from service_helpers import Stack, diverging_spec, record_timing, tiny_spec
from sqlalchemy import func, select

from core.spec import JobSpec
from db.models import Result
from db.session import session_scope

pytestmark = [pytest.mark.services, pytest.mark.e2e]

EXPECTED_METRICS = {
    "clean_acc", "gaussian_acc@0", "gaussian_acc@0.1", "pgd_linf_acc@0.05", "pgd_l2_acc@0.05",
    "certified_l2_acc@0.05", "lipschitz_bound", "train_seconds", "eval_seconds",
}  # fmt: skip


def test_job_runs_through_the_queue(pg_stack: Stack) -> None:
    spec = tiny_spec("e2e-pg-happy")
    start = time.monotonic()
    job = pg_stack.submit(spec)
    assert job["status"] == "queued"
    done = pg_stack.wait(job["id"], timeout=120)
    elapsed = time.monotonic() - start
    record_timing(backend="postgresql+redis", what="submit->succeeded", seconds=round(elapsed, 2))
    assert done["status"] == "succeeded", done.get("error")
    assert done["attempts"] == 1 and done["worker"] and done["finished_at"] >= done["started_at"]
    assert done["progress"]["phase"] == "done"

    with pg_stack.client() as c:
        results = c.get(f"/api/v1/jobs/{job['id']}/results").json()
        board = c.get("/api/v1/leaderboard", params={"dataset": "spirals", "family": "explicit"}).json()
        pgd_board = c.get("/api/v1/leaderboard", params={"metric": "pgd_linf_acc@0.05"}).json()
    metrics = results["metrics"]
    assert EXPECTED_METRICS <= set(metrics)
    assert 0.0 <= metrics["certified_l2_acc@0.05"] <= metrics["pgd_l2_acc@0.05"] <= metrics["clean_acc"] <= 1.0
    assert done["spec_hash"] == JobSpec.model_validate(spec).spec_hash() and len(results["info"]["spec_hash"]) == 64

    entry = next(e for e in board["entries"] if e["job_id"] == job["id"])
    assert entry["value"] == metrics["clean_acc"] and (entry["width"], entry["depth"], entry["h"]) == (8, 4, 0.2)
    assert job["id"] in [e["job_id"] for e in pgd_board["entries"]]

    out = pg_stack.artifacts_dir / job["id"]
    assert {"result.json", "model.safetensors", "spec.json"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "result.json").read_text())["metrics"]["clean_acc"] == metrics["clean_acc"]


def test_diverging_job_fails_with_its_message_and_no_results(pg_stack: Stack) -> None:
    job = pg_stack.submit(diverging_spec())
    done = pg_stack.wait(job["id"], timeout=120)
    assert done["status"] == "failed"
    assert done["error"].startswith("TrainingDiverged: ") and "diverged" in done["error"]
    with pg_stack.client() as c:
        results = c.get(f"/api/v1/jobs/{job['id']}/results").json()
    assert results["metrics"] == {} and results["error"] == done["error"]
    with session_scope(pg_stack.database_url) as s:
        assert s.scalar(select(func.count()).select_from(Result).where(Result.job_id == job["id"])) == 0


def test_duplicate_delivery_runs_the_job_once(pg_stack: Stack) -> None:
    """The broker may deliver a job twice (redelivery, API re-dispatch): the database claim drops the second."""
    from api.dispatch import Dispatcher
    from core.config import Settings

    job = pg_stack.submit(tiny_spec("e2e-pg-duplicate"))
    dispatcher = Dispatcher(Settings(database_url=pg_stack.database_url, broker_url=pg_stack.broker_url))
    assert dispatcher.enqueue(job["id"], "cpu")
    done = pg_stack.wait(job["id"], timeout=120)
    assert done["status"] == "succeeded" and done["attempts"] == 1
    # the second message is consumed (and dropped) after the first: wait for the queue to drain
    deadline = time.monotonic() + 30
    while "dropped" not in pg_stack.logs["worker"].read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "dropped" in pg_stack.logs["worker"].read_text()
    with pg_stack.client() as c:
        again = c.get(f"/api/v1/jobs/{job['id']}").json()
    assert again["attempts"] == 1 and again["finished_at"] == done["finished_at"]
