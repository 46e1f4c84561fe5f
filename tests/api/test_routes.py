"""The API in-process (FastAPI TestClient) on a real SQLite database and a real broker (kombu's SQLAlchemy
transport on SQLite): validation errors, 404/409, submission, listing, leaderboard, health, OpenAPI."""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_helpers import free_port, tiny_spec

from api.main import create_app
from core.config import Settings
from db import lifecycle
from db.session import session_scope


def make_settings(tmp_path: Path, sqlite_url: str, **overrides) -> Settings:
    values = {
        "database_url": sqlite_url,
        "broker_url": f"sqla+sqlite:///{tmp_path / 'broker.db'}",
        "artifacts_dir": tmp_path / "artifacts",
        "broker_timeout": 1.0,
    }
    return Settings(**(values | overrides))


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return make_settings(tmp_path, sqlite_url)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, recovery=False)) as c:
        yield c


def error_locations(response) -> list[tuple]:
    assert response.status_code == 422, response.text
    return [tuple(e["loc"]) for e in response.json()["detail"]]


# ---------------------------------------------------------------------------------------------------- submit
def test_submit_returns_201_and_enqueues(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    r = client.post("/api/v1/jobs", json=tiny_spec("submitted"))
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] == "queued" and job["name"] == "submitted" and job["family"] == "explicit"
    assert job["spec"]["train"]["optimizer"] == "adam"  # defaults filled in
    assert r.headers["location"] == f"/api/v1/jobs/{job['id']}" and r.headers["x-robustlab-enqueued"] == "true"
    # the message is in the broker's store, with the job id as Celery task id, on the cpu queue
    with sqlite3.connect(tmp_path / "broker.db") as conn:
        rows = conn.execute(
            "SELECT q.name, m.payload FROM kombu_message m JOIN kombu_queue q ON q.id = m.queue_id"
        ).fetchall()
    assert len(rows) == 1 and rows[0][0] == "cpu" and job["id"] in rows[0][1]


@pytest.mark.parametrize(
    ("change", "location"),
    [
        (lambda s: s.update(bogus=1), ("body", "bogus")),
        (lambda s: s["model"].update(colour="red"), ("body", "model", "colour")),
        (lambda s: s["model"].update(family="implicit", theta=1.5), ("body", "model", "theta")),
        (lambda s: s["evaluate"]["pgd"].update(eps=[-0.1]), ("body", "evaluate", "pgd", "eps", 0)),
        (lambda s: s["evaluate"]["certified"].update(eps=[0.05, -1]), ("body", "evaluate", "certified", "eps", 1)),
        (lambda s: s["train"].update(lr=1e6), ("body", "train", "lr")),
        (lambda s: s.pop("dataset"), ("body", "dataset")),
        (
            lambda s: s["evaluate"].update(autoattack={"eps": [0.1], "steps": 9}),
            ("body", "evaluate", "autoattack", "steps"),
        ),
        (
            lambda s: s["evaluate"].update(smoothing={"eps": [0.1], "sigmas": [0]}),
            ("body", "evaluate", "smoothing", "sigmas", 0),
        ),
        (
            lambda s: s["evaluate"].update(smoothing={"eps": [0.1], "n0": 200, "n": 100}),
            ("body", "evaluate", "smoothing", "n0"),
        ),
        (
            lambda s: s["evaluate"].update(smoothing={"eps": [0.1], "alpha": 1.0}),
            ("body", "evaluate", "smoothing", "alpha"),
        ),
        (lambda s: s["evaluate"].update(smoothing={"eps": [0.1], "n": 10**6}), ("body", "evaluate", "smoothing", "n")),
        (lambda s: s["train"].update(noise_sigma=-0.1), ("body", "train", "noise_sigma")),
    ],
    ids=[
        "unknown-field",
        "unknown-nested-field",
        "theta",
        "pgd-eps",
        "certified-eps",
        "lr",
        "missing",
        "suite-steps",
        "smoothing-sigma",
        "smoothing-n0",
        "smoothing-alpha",
        "smoothing-n-cap",
        "noise-sigma",
    ],
)
def test_invalid_spec_is_422_naming_the_field(client: TestClient, change, location) -> None:
    spec = tiny_spec()
    change(spec)
    assert location in error_locations(client.post("/api/v1/jobs", json=spec))
    assert client.get("/api/v1/jobs").json()["total"] == 0


def test_submit_with_broker_down_keeps_the_job_queued(tmp_path: Path, sqlite_url: str) -> None:
    settings = make_settings(tmp_path, sqlite_url, broker_url=f"redis://127.0.0.1:{free_port()}/0")
    with TestClient(create_app(settings, recovery=False)) as client:
        r = client.post("/api/v1/jobs", json=tiny_spec())
        assert r.status_code == 201 and r.json()["status"] == "queued"
        assert r.headers["x-robustlab-enqueued"] == "false"
        assert client.get(f"/api/v1/jobs/{r.json()['id']}").json()["status"] == "queued"


# ---------------------------------------------------------------------------------------------------- read
@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/api/v1/jobs/{id}"), ("get", "/api/v1/jobs/{id}/results"), ("post", "/api/v1/jobs/{id}/cancel")],
)
def test_unknown_job_is_404(client: TestClient, method: str, path: str) -> None:
    r = getattr(client, method)(path.format(id="00000000-0000-0000-0000-000000000000"))
    assert r.status_code == 404 and "not found" in r.json()["detail"]


def test_job_lifecycle_through_the_routes(client: TestClient, settings: Settings) -> None:
    job = client.post("/api/v1/jobs", json=tiny_spec("life")).json()
    r = client.get(f"/api/v1/jobs/{job['id']}/results")
    assert r.status_code == 409 and "queued" in r.json()["detail"]

    with session_scope(settings.database_url) as s:  # what the worker does
        lifecycle.claim_job(s, job["id"], "w", 60)
        lifecycle.update_progress(s, job["id"], {"phase": "train", "epoch": 3, "epochs": 30, "loss": 0.5}, "w")
    got = client.get(f"/api/v1/jobs/{job['id']}").json()
    assert got["status"] == "running" and got["progress"]["epoch"] == 3 and got["started_at"] is not None
    assert client.get(f"/api/v1/jobs/{job['id']}/results").status_code == 409
    with session_scope(settings.database_url) as s:
        lifecycle.complete_job(s, job["id"], {"clean_acc": 0.75, "pgd_linf_acc@0.05": 0.5}, {"spec_hash": "x"}, "w")

    results = client.get(f"/api/v1/jobs/{job['id']}/results").json()
    assert results["metrics"] == {"clean_acc": 0.75, "pgd_linf_acc@0.05": 0.5}
    assert results["info"] == {"spec_hash": "x"} and results["status"] == "succeeded"
    board = client.get("/api/v1/leaderboard", params={"metric": "pgd_linf_acc@0.05", "dataset": "spirals"}).json()
    assert [(e["job_id"], e["value"], e["clean_acc"], e["width"]) for e in board["entries"]] == [
        (job["id"], 0.5, 0.75, 8)
    ]
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 409


def test_list_and_cancel(client: TestClient) -> None:
    ids = [client.post("/api/v1/jobs", json=tiny_spec()).json()["id"] for _ in range(3)]
    cancelled = client.post(f"/api/v1/jobs/{ids[0]}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    page = client.get("/api/v1/jobs", params={"status": "queued", "limit": 1}).json()
    assert page["total"] == 2 and len(page["items"]) == 1 and page["items"][0]["id"] in ids[1:]
    assert client.get("/api/v1/jobs", params={"status": "bogus"}).status_code == 422
    assert client.get("/api/v1/jobs", params={"limit": 0}).status_code == 422


def test_leaderboard_validates_its_parameters(client: TestClient) -> None:
    assert client.get("/api/v1/leaderboard").json()["entries"] == []
    assert ("query", "metric") in error_locations(client.get("/api/v1/leaderboard", params={"metric": "a;b"}))
    assert ("query", "order") in error_locations(client.get("/api/v1/leaderboard", params={"order": "up"}))
    assert ("query", "limit") in error_locations(client.get("/api/v1/leaderboard", params={"limit": 10_000}))


# ---------------------------------------------------------------------------------------------------- health, docs
def test_health_ok(client: TestClient) -> None:
    for path in ("/healthz", "/api/v1/healthz"):
        body = client.get(path).json()
        assert body["status"] == "ok" and body["database"]["ok"] and body["broker"]["ok"]


def test_health_503_names_what_is_down(tmp_path: Path, sqlite_url: str) -> None:
    port = free_port()
    down = make_settings(tmp_path, sqlite_url, broker_url=f"redis://127.0.0.1:{port}/0")
    with TestClient(create_app(down, recovery=False)) as client:
        r = client.get("/healthz")
        assert r.status_code == 503
        body = r.json()
        assert body["database"]["ok"] and not body["broker"]["ok"] and body["broker"]["detail"]
    down = make_settings(tmp_path, f"postgresql+psycopg://nobody@127.0.0.1:{port}/none")
    with TestClient(create_app(down, recovery=False)) as client:
        body = client.get("/healthz").json()
        assert not body["database"]["ok"] and body["broker"]["ok"]


def test_health_503_does_not_leak_where_the_services_are(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Unauthenticated: the body says which service is down, the log says where (issue 18, item 8). The real
    PostgreSQL server, asked for a database that does not exist: its error names host, port and database."""
    missing = f"robustlab_missing_{uuid.uuid4().hex[:8]}"
    broker_port = free_port()
    down = make_settings(
        tmp_path,
        f"postgresql+psycopg://postgres@127.0.0.1:5432/{missing}",
        broker_url=f"redis://127.0.0.1:{broker_port}/0",
    )
    app = create_app(down, recovery=False)
    with caplog.at_level(logging.WARNING, logger="api.routes.health"), TestClient(app) as c:
        r = c.get("/healthz")
    assert r.status_code == 503
    body = r.json()
    assert body["database"] == {"ok": False, "detail": "database unreachable"}
    assert body["broker"] == {"ok": False, "detail": "broker unreachable"}
    for secret in (missing, "5432", "127.0.0.1", str(broker_port)):
        assert secret not in r.text
    assert missing in caplog.text and str(broker_port) in caplog.text  # the details are logged


def test_openapi_and_docs(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    for path in ("/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/results", "/api/v1/leaderboard"):
        assert path in schema["paths"]
    assert "JobSpec" in schema["components"]["schemas"]
