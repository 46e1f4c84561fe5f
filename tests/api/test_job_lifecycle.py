"""Job life cycle through the API on PostgreSQL: Idempotency-Key, re-use of a succeeded job with the same spec,
retry, and cancelling a running job — run by the real worker code in a thread — with progress and ETA."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient
from service_helpers import diverging_spec, tiny_spec

from api.security import create_api_key
from core.config import Settings
from core.protocol import current_protocol
from core.provenance import current_code
from core.spec import JobSpec
from db import jobs, lifecycle
from db.session import session_scope
from worker.executor import execute_job

pytestmark = pytest.mark.services


def total_jobs(client: TestClient) -> int:
    return client.get("/api/v1/jobs").json()["total"]


# ---------------------------------------------------------------------------------------------------- idempotency
def test_idempotency_key_returns_the_same_job(pg_client: TestClient) -> None:
    spec = tiny_spec("idem")
    first = pg_client.post("/api/v1/jobs", json=spec, headers={"Idempotency-Key": "req-1"})
    again = pg_client.post("/api/v1/jobs", json=spec, headers={"Idempotency-Key": "req-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"] and again.headers["x-robustlab-reused"] == "idempotency-key"
    assert again.headers["location"] == f"/api/v1/jobs/{first.json()['id']}"
    other = pg_client.post("/api/v1/jobs", json=spec, headers={"Idempotency-Key": "req-2"})
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    assert pg_client.post("/api/v1/jobs", json=spec).status_code == 201  # no key: a new job each time
    assert total_jobs(pg_client) == 3

    changed = pg_client.post("/api/v1/jobs", json=tiny_spec("idem-other"), headers={"Idempotency-Key": "req-1"})
    assert changed.status_code == 422 and "different spec" in changed.json()["detail"]
    assert total_jobs(pg_client) == 3


def test_concurrent_requests_with_one_key_make_one_job(pg_db: str) -> None:
    spec = JobSpec.model_validate(tiny_spec("race"))
    ids: list[str] = []
    barrier = threading.Barrier(8)

    def submit() -> None:
        barrier.wait()
        with session_scope(pg_db) as s:
            job, _ = jobs.submit_job(s, spec, idempotency_key="same", owner="", code_version=current_code().identity)
            ids.append(job.id)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 8 and len(set(ids)) == 1
    with session_scope(pg_db) as s:
        assert jobs.list_jobs(s)[1] == 1


def test_idempotency_keys_belong_to_their_api_key(make_pg_client, pg_db: str) -> None:
    client = make_pg_client(auth="keys")
    with session_scope(pg_db) as s:
        alice, bob = create_api_key(s, "alice", "write")[1], create_api_key(s, "bob", "write")[1]
    spec, key = tiny_spec("shared"), {"Idempotency-Key": "k"}
    a = client.post("/api/v1/jobs", json=spec, headers={**key, "Authorization": f"Bearer {alice}"})
    b = client.post("/api/v1/jobs", json=spec, headers={**key, "Authorization": f"Bearer {bob}"})
    assert (a.status_code, b.status_code) == (201, 201) and a.json()["id"] != b.json()["id"]


# ---------------------------------------------------------------------------------------------------- re-use
def test_succeeded_job_with_the_same_spec_is_reused_unless_forced(pg_client: TestClient, finish) -> None:
    spec = tiny_spec("seeded-run")
    done = finish(spec, {"clean_acc": 0.9})
    reused = pg_client.post("/api/v1/jobs", json=spec)
    assert reused.status_code == 200 and reused.json()["id"] == done
    assert reused.headers["x-robustlab-reused"] == "succeeded-job" and reused.json()["status"] == "succeeded"
    forced = pg_client.post("/api/v1/jobs", params={"force": "true"}, json=spec)
    assert forced.status_code == 201 and forced.json()["id"] != done
    changed = pg_client.post("/api/v1/jobs", json=tiny_spec("seeded-run", train={"epochs": 31, "lr": 0.02}))
    assert changed.status_code == 201  # another spec hash


def test_reuse_needs_the_same_code_version(pg_client: TestClient, pg_db: str) -> None:
    spec = JobSpec.model_validate(tiny_spec("old-code"))
    with session_scope(pg_db) as s:
        job = jobs.create_job(s, spec, code_version="0.0.1")
        lifecycle.claim_job(s, job.id, "w", 60)
        info = {"versions": {"robustlab": "0.0.1"}, "provenance": {"protocol_version": current_protocol()}}
        lifecycle.complete_job(s, job.id, {"clean_acc": 0.5}, info, "w")  # the current protocol, other code
    assert pg_client.post("/api/v1/jobs", json=tiny_spec("old-code")).status_code == 201


# ---------------------------------------------------------------------------------------------------- retry
def test_retry_failed_and_cancelled_jobs(pg_client: TestClient, pg_db: str, pg_settings: Settings) -> None:
    failed = pg_client.post("/api/v1/jobs", json=diverging_spec()).json()["id"]
    assert execute_job(failed, worker="w1", settings=pg_settings) == "failed"
    before = pg_client.get(f"/api/v1/jobs/{failed}").json()
    assert before["status"] == "failed" and before["attempts"] == 1 and before["error"]

    retried = pg_client.post(f"/api/v1/jobs/{failed}/retry")
    assert retried.status_code == 200, retried.text
    body = retried.json()
    assert (body["status"], body["attempts"], body["error"], body["worker"]) == ("queued", 0, None, None)
    assert body["finished_at"] is None and body["progress"] is None and body["id"] == failed
    with session_scope(pg_db) as s:
        assert lifecycle.claim_job(s, failed, "w2", 60) is not None  # a worker can take it again

    queued = pg_client.post("/api/v1/jobs", json=tiny_spec()).json()["id"]
    assert pg_client.post(f"/api/v1/jobs/{queued}/retry").status_code == 409  # queued: nothing to retry
    assert pg_client.post(f"/api/v1/jobs/{queued}/cancel").json()["status"] == "cancelled"
    assert pg_client.post(f"/api/v1/jobs/{queued}/retry").json()["status"] == "queued"
    assert pg_client.post("/api/v1/jobs/nope/retry").status_code == 404


def test_retry_of_a_succeeded_job_is_409(pg_client: TestClient, finish) -> None:
    done = finish(tiny_spec(), {"clean_acc": 1.0})
    r = pg_client.post(f"/api/v1/jobs/{done}/retry")
    assert r.status_code == 409 and "succeeded" in r.json()["detail"]


# ---------------------------------------------------------------------------------------------------- cancel
def test_cancel_stops_a_running_job_between_epochs(pg_client: TestClient, make_pg_settings) -> None:
    settings = make_pg_settings(progress_interval=0.05, lease_seconds=5)
    spec = tiny_spec("long", train={"epochs": 20_000, "lr": 0.01})
    job_id = pg_client.post("/api/v1/jobs", json=spec).json()["id"]
    outcome: list[str] = []
    worker = threading.Thread(target=lambda: outcome.append(execute_job(job_id, "w", settings)), daemon=True)
    worker.start()

    deadline = time.monotonic() + 60
    job = pg_client.get(f"/api/v1/jobs/{job_id}").json()
    while (job["progress"] or {}).get("eta_seconds") is None or job["progress"]["epoch"] < 20:
        assert time.monotonic() < deadline and worker.is_alive(), job
        time.sleep(0.05)
        job = pg_client.get(f"/api/v1/jobs/{job_id}").json()
    progress = job["progress"]
    assert job["status"] == "running" and progress["phase"] == "train" and progress["epochs"] == 20_000
    assert progress["loss"] > 0 and progress["seconds_per_epoch"] > 0
    assert progress["eta_seconds"] == pytest.approx(progress["seconds_per_epoch"] * (20_000 - progress["epoch"]))
    assert 0 < job["eta_seconds"] <= progress["eta_seconds"]

    cancelled = pg_client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["eta_seconds"] is None
    worker.join(timeout=30)
    assert not worker.is_alive() and outcome == ["cancelled"]
    final = pg_client.get(f"/api/v1/jobs/{job_id}").json()
    assert final["status"] == "cancelled" and final["progress"]["epoch"] < 20_000
    assert pg_client.get(f"/api/v1/jobs/{job_id}/results").json()["metrics"] == {}
