"""API keys on PostgreSQL: the `robustlab keys` commands, Bearer checks (401 / 403), public reads, revocation,
the per-key rate limit (429) and the request size limit (413)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from service_helpers import tiny_spec
from sqlalchemy import select
from typer.testing import CliRunner

from api.security import create_api_key
from cli.main import app as cli_app
from core.config import get_settings
from db.models import ApiKey
from db.session import session_scope

pytestmark = pytest.mark.services


@pytest.fixture
def robustlab(pg_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., object]]:
    """Run the CLI in-process against the test database."""
    monkeypatch.setenv("ROBUSTLAB_DATABASE_URL", pg_db)
    get_settings.cache_clear()
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(cli_app, list(args), catch_exceptions=False)

    yield run
    get_settings.cache_clear()


@pytest.fixture
def make_key(pg_db: str) -> Callable[[str, str], str]:
    def make(name: str, scope: str) -> str:
        with session_scope(pg_db) as s:
            return create_api_key(s, name, scope)[1]

    return make


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_keys_cli_creates_lists_and_revokes(robustlab, pg_db: str, make_pg_client) -> None:
    created = robustlab("keys", "create", "--name", "ci", "--scope", "write")
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("rlk_") and len(token) > 50
    with session_scope(pg_db) as s:
        row = s.scalar(select(ApiKey).where(ApiKey.name == "ci"))
        stored = [str(getattr(row, c.key)) for c in ApiKey.__table__.columns]
    assert row.key_hash == hashlib.sha256(token.encode()).hexdigest()  # only the hash is stored
    assert not any(token in value for value in stored)

    listed = robustlab("keys", "list")
    assert listed.exit_code == 0 and "ci" in listed.stdout and "write" in listed.stdout and token not in listed.stdout
    assert robustlab("keys", "create", "--name", "ci").exit_code == 2  # names are unique
    assert robustlab("keys", "create", "--name", "x", "--scope", "root").exit_code == 2

    client = make_pg_client(auth="keys")
    assert client.post("/api/v1/jobs", json=tiny_spec(), headers=bearer(token)).status_code == 201
    assert robustlab("keys", "revoke", "ci").exit_code == 0
    r = client.post("/api/v1/jobs", json=tiny_spec(), headers=bearer(token))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert "revoked" in robustlab("keys", "list").stdout
    assert robustlab("keys", "revoke", "nobody").exit_code == 2


def test_db_commands(robustlab, pg_client: TestClient) -> None:
    from alembic.script import ScriptDirectory

    from db.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    current = robustlab("db", "current")
    assert current.exit_code == 0 and current.stdout.strip() == head
    seeded = robustlab("db", "seed", "--jobs", "12")
    assert seeded.exit_code == 0 and "added 12 jobs and 60 results" in " ".join(seeded.stdout.split())
    assert len(pg_client.get("/api/v1/leaderboard", params={"limit": 50}).json()["entries"]) == 12


def test_writes_need_a_write_key(make_pg_client, make_key) -> None:
    client = make_pg_client(auth="keys")
    reader, writer, admin = make_key("reader", "read"), make_key("writer", "write"), make_key("admin", "admin")

    r = client.post("/api/v1/jobs", json=tiny_spec())
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = client.post("/api/v1/jobs", json=tiny_spec(), headers=bearer("rlk_00000000_not-a-key"))
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    wrong_secret = writer[: writer.rindex("_") + 1] + "x" * 43
    assert client.post("/api/v1/jobs", json=tiny_spec(), headers=bearer(wrong_secret)).status_code == 401
    r = client.post("/api/v1/jobs", json=tiny_spec(), headers=bearer(reader))
    assert r.status_code == 403 and "insufficient_scope" in r.headers["www-authenticate"]
    assert (
        client.post("/api/v1/jobs", json=tiny_spec(), headers={"Authorization": f"Basic {writer}"}).status_code == 401
    )

    job = client.post("/api/v1/jobs", json=tiny_spec(), headers=bearer(writer))
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    for path in (f"/api/v1/jobs/{job_id}/cancel", f"/api/v1/jobs/{job_id}/retry"):
        assert client.post(path).status_code == 401
        assert client.post(path, headers=bearer(reader)).status_code == 403
    assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bearer(admin)).status_code == 200
    assert client.post(f"/api/v1/jobs/{job_id}/retry", headers=bearer(writer)).status_code == 200
    upload = {"file": ("d.npz", b"not an npz", "application/octet-stream")}
    assert client.post("/api/v1/artifacts/datasets", files=upload).status_code == 401
    assert client.post("/api/v1/artifacts/datasets", files=upload, headers=bearer(reader)).status_code == 403
    assert client.post("/api/v1/artifacts/datasets", files=upload, headers=bearer(writer)).status_code == 422


@pytest.mark.parametrize("public_read", [True, False])
def test_public_read_setting(make_pg_client, make_key, public_read: bool) -> None:
    client = make_pg_client(auth="keys", public_read=public_read)
    reader = make_key("reader", "read")
    job_id = client.post("/api/v1/jobs", json=tiny_spec(), headers=bearer(make_key("w", "write"))).json()["id"]
    paths = ["/api/v1/leaderboard", "/api/v1/jobs", f"/api/v1/jobs/{job_id}", f"/api/v1/compare?jobs={job_id}"]
    for path in paths:
        anonymous = client.get(path)
        assert anonymous.status_code == (200 if public_read else 401), (path, anonymous.text)
        assert client.get(path, headers=bearer(reader)).status_code == 200
        assert client.get(path, headers=bearer("rlk_12345678_bad")).status_code == 401  # a bad key is never ignored
    assert client.get("/healthz").status_code == 200  # for load balancers, always


def test_open_mode_needs_no_key(pg_client: TestClient) -> None:
    assert pg_client.post("/api/v1/jobs", json=tiny_spec()).status_code == 201
    assert pg_client.get("/api/v1/leaderboard").status_code == 200


def test_rate_limit_per_key(make_pg_client, make_key) -> None:
    client = make_pg_client(auth="keys", rate_limit=0.5, rate_limit_burst=3)
    first, second = make_key("first", "read"), make_key("second", "read")
    codes = [client.get("/api/v1/leaderboard", headers=bearer(first)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = client.get("/api/v1/leaderboard", headers=bearer(first))
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert client.get("/api/v1/leaderboard", headers=bearer(second)).status_code == 200  # its own bucket


def test_spec_size_limit_413(make_pg_client) -> None:
    client = make_pg_client(max_spec_bytes=2048)
    body = json.dumps(tiny_spec()).encode()
    padded = body[:-1] + b" " * 4096 + b"}"
    assert client.post("/api/v1/jobs", content=body, headers={"Content-Type": "application/json"}).status_code == 201
    r = client.post("/api/v1/jobs", content=padded, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "2048" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the bytes are counted as they arrive
        for i in range(0, len(padded), 512):
            yield padded[i : i + 512]

    r = client.post("/api/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert client.get("/api/v1/jobs").json()["total"] == 1


def test_work_budget_is_422(pg_client: TestClient) -> None:
    huge = tiny_spec(model={"family": "explicit", "width": 4096, "depth": 1000}, train={"epochs": 100000})
    r = pg_client.post("/api/v1/jobs", json=huge)
    assert r.status_code == 422 and "job too large" in r.text


def test_up_warns_when_the_api_is_open(capsys: pytest.CaptureFixture[str]) -> None:
    from cli.service import _warn_if_open
    from core.config import Settings

    _warn_if_open(Settings(auth="open"), "0.0.0.0")
    warning = " ".join(capsys.readouterr().err.split())
    assert "WARNING: the API is open" in warning and "NOT only this machine" in warning
    assert "ROBUSTLAB_AUTH=keys" in warning
    _warn_if_open(Settings(auth="keys"), "0.0.0.0")
    assert "WARNING" not in capsys.readouterr().err
