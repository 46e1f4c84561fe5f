"""Provenance through the API on PostgreSQL, jobs run by the real worker code in-process: what a job records,
de-duplication by spec hash + code identity + protocol version, stale entries and re-evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_helpers import tiny_spec

from core.config import Settings
from core.protocol import current_protocol, current_revisions
from core.provenance import current_code
from db import jobs
from db.session import session_scope
from worker.executor import execute_job

pytestmark = pytest.mark.services


def run(client: TestClient, settings: Settings, spec: dict) -> dict:
    """Submit ``spec`` and run it with the worker's own code; the finished job."""
    job = client.post("/api/v1/jobs", json=spec)
    assert job.status_code == 201, job.text
    assert execute_job(job.json()["id"], worker="w", settings=settings) == "succeeded"
    return client.get(f"/api/v1/jobs/{job.json()['id']}").json()


def test_a_job_records_its_code_libraries_and_protocol(pg_client: TestClient, pg_settings: Settings) -> None:
    import numpy
    import torch
    import torchattacks

    done = run(pg_client, pg_settings, tiny_spec("provenance"))
    assert done["code_version"] == current_code().identity and done["protocol_version"] == current_protocol()
    assert done["stale"] is False and done["weights_kept"] is True and done["reevaluation_of"] is None
    libraries = {"torch": torch.__version__, "torchattacks": torchattacks.__version__, "numpy": numpy.__version__}
    record = done["provenance"]
    assert libraries.items() <= record["libraries"].items()
    assert record["code"]["identity"] == current_code().identity and record["code"]["commit"] == current_code().commit
    assert record["protocol_version"] == current_protocol() and record["protocol_revisions"] == current_revisions()
    result = json.loads((Path(pg_settings.artifacts_dir) / done["id"] / "result.json").read_text())
    assert result["info"]["provenance"] == record  # result.json, the job row and the API say the same
    health = pg_client.get("/healthz").json()
    assert (health["code_version"], health["protocol_version"]) == (current_code().identity, current_protocol())


def test_dedup_refuses_a_job_run_under_another_protocol_revision(
    pg_client: TestClient, pg_settings: Settings, bump_revision
) -> None:
    spec = tiny_spec("dedup-protocol")
    old = run(pg_client, pg_settings, spec)
    again = pg_client.post("/api/v1/jobs", json=spec)
    assert again.status_code == 200 and again.json()["id"] == old["id"]  # same spec, code and protocol: reused

    revision = bump_revision("gaussian")  # the Gaussian evaluation's numbers changed on purpose
    new = pg_client.post("/api/v1/jobs", json=spec)
    assert new.status_code == 201 and new.json()["id"] != old["id"], new.text
    assert new.json()["protocol_version"] == current_protocol() and f"gaussian.{revision}" in current_protocol()
    assert pg_client.get(f"/api/v1/jobs/{old['id']}").json()["stale"] is True

    # the old entry is marked stale on the leaderboard; ?current=true leaves it out until re-evaluated
    board = pg_client.get("/api/v1/leaderboard").json()
    assert board["protocol_version"] == current_protocol()
    entry = next(e for e in board["entries"] if e["job_id"] == old["id"])
    assert entry["stale"] is True and entry["protocol_version"] == old["protocol_version"]
    assert entry["weights_kept"] is True and entry["code_version"] == current_code().identity
    current = pg_client.get("/api/v1/leaderboard", params={"current": "true"}).json()
    assert old["id"] not in [e["job_id"] for e in current["entries"]] and current["current"] is True
    stale = pg_client.get("/api/v1/jobs", params={"stale": "true"}).json()
    assert [j["id"] for j in stale["items"]] == [old["id"]]  # the queued new job is not stale

    assert execute_job(new.json()["id"], worker="w", settings=pg_settings) == "succeeded"
    current = pg_client.get("/api/v1/leaderboard", params={"current": "true"}).json()
    assert [e["job_id"] for e in current["entries"]] == [new.json()["id"]]


def test_reevaluation_loads_the_weights_and_links_back(pg_client: TestClient, pg_settings: Settings) -> None:
    old = run(pg_client, pg_settings, tiny_spec("reeval"))
    first = pg_client.post(f"/api/v1/jobs/{old['id']}/reevaluate")
    assert first.status_code == 201, first.text
    new = first.json()
    assert new["reevaluation_of"] == old["id"] and new["status"] == "queued"
    assert new["spec"]["checkpoint"] == f"job:{old['id']}" and new["spec"]["train"] == old["spec"]["train"]
    assert first.headers["location"] == f"/api/v1/jobs/{new['id']}"
    again = pg_client.post(f"/api/v1/jobs/{old['id']}/reevaluate")  # one per protocol: the queued one answers
    assert again.status_code == 200 and again.json()["id"] == new["id"]
    assert again.headers["x-robustlab-reused"] == "reevaluation"
    forced = pg_client.post(f"/api/v1/jobs/{old['id']}/reevaluate", params={"force": "true"})
    assert forced.status_code == 201 and forced.json()["id"] != new["id"]
    assert pg_client.post(f"/api/v1/jobs/{forced.json()['id']}/cancel").status_code == 200

    assert execute_job(new["id"], worker="w", settings=pg_settings) == "succeeded"
    done = pg_client.get(f"/api/v1/jobs/{new['id']}").json()
    assert done["weights_kept"] and done["protocol_version"] == current_protocol() and not done["stale"]
    metrics = pg_client.get(f"/api/v1/jobs/{new['id']}/results").json()["metrics"]
    assert "train_loss" not in metrics and "train_seconds" not in metrics  # loaded, not trained
    board = pg_client.get("/api/v1/leaderboard").json()
    assert next(e for e in board["entries"] if e["job_id"] == new["id"])["reevaluation_of"] == old["id"]


def test_reevaluating_an_unknown_job_is_404_and_one_without_weights_409(
    pg_client: TestClient, pg_settings: Settings, pg_db: str, finish
) -> None:
    r = pg_client.post("/api/v1/jobs/00000000-0000-4000-8000-000000000000/reevaluate")
    assert r.status_code == 404 and "not found" in r.json()["detail"]

    queued = pg_client.post("/api/v1/jobs", json=tiny_spec("still-queued")).json()["id"]
    r = pg_client.post(f"/api/v1/jobs/{queued}/reevaluate")
    assert r.status_code == 409 and "is queued" in r.json()["detail"] and "only a succeeded job" in r.json()["detail"]

    stored = finish(tiny_spec("no-weights"), {"clean_acc": 0.9})  # stored without a worker's artifacts
    r = pg_client.post(f"/api/v1/jobs/{stored}/reevaluate")
    assert r.status_code == 409 and "kept no weights" in r.json()["detail"]
    board = pg_client.get("/api/v1/leaderboard").json()
    assert next(e for e in board["entries"] if e["job_id"] == stored)["weights_kept"] is False

    ran = run(pg_client, pg_settings, tiny_spec("weights-deleted"))
    (Path(pg_settings.artifacts_dir) / ran["id"] / "model.safetensors").unlink()
    r = pg_client.post(f"/api/v1/jobs/{ran['id']}/reevaluate")
    assert r.status_code == 409 and "missing from the artifacts directory" in r.json()["detail"]

    # a spec naming a job's weights directly: the same checks, as a 422 on the field
    r = pg_client.post("/api/v1/jobs", json=tiny_spec("by-ref", checkpoint=f"job:{stored}"))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "checkpoint"]
    r = pg_client.post("/api/v1/jobs", json=tiny_spec("by-ref", checkpoint="job:../../etc"))
    assert r.status_code == 422 and "no job" in r.json()["detail"][0]["msg"]
    with session_scope(pg_db) as s:
        assert jobs.get_job(s, stored).status == "succeeded"  # nothing changed
