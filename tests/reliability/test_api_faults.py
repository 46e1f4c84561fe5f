"""The API process is killed and restarted while jobs run; the database refuses connections for a while.

* API SIGKILLed mid-job: the worker does not need it (it talks to the broker and the database), so the running job
  goes on, the queued ones are run, and the restarted API — same port — serves them all; its start-up re-send of
  the queued jobs only makes duplicate messages, which the claim drops.
* Database unreachable (``ALTER DATABASE … ALLOW_CONNECTIONS false`` and ``pg_terminate_backend`` of its sessions):
  the API answers 503 with a JSON ``detail`` at once (no 500, no hang); the worker finishes training during the
  outage, retries storing the results until the database is back, and the job succeeds on its first attempt.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import httpx
import pytest
from reliability_harness import assert_finished_once, long_spec, training_past
from service_helpers import record_timing, tiny_spec
from sqlalchemy import text

from db.session import get_engine

pytestmark = [pytest.mark.services, pytest.mark.e2e, pytest.mark.timeout(180)]


def test_api_killed_and_restarted_while_jobs_run(services) -> None:
    stack = services(ROBUSTLAB_LEASE_SECONDS="10", ROBUSTLAB_RECOVERY_INTERVAL="1")
    stack.start_api()
    stack.start_worker("worker")
    stack.wait_ready("api", "worker")

    running = stack.submit(long_spec("api-restart-running"))
    queued = [stack.submit(tiny_spec(f"api-restart-queued-{i}"))["id"] for i in range(2)]
    before = stack.wait_until(running["id"], training_past(20), what="training")

    killed = stack.kill("api")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{stack.base_url}/healthz", timeout=2)
    # the job trains on without the API: its progress goes on in the database
    engine = get_engine(stack.database_url)
    deadline = time.monotonic() + 30
    while True:
        with engine.connect() as c:
            epoch = c.execute(text("SELECT progress FROM jobs WHERE id = :id"), {"id": running["id"]}).scalar_one()
        if (epoch or {}).get("epoch", 0) > before["progress"]["epoch"] or (epoch or {}).get("phase") != "train":
            break
        assert time.monotonic() < deadline, "the job made no progress while the API was down"
        time.sleep(0.1)

    stack.start_api()
    stack.wait_ready("api")
    back = time.monotonic()
    assert stack.get_job(running["id"])["attempts"] == 1  # GET works at once; the job was not restarted
    late = stack.submit(tiny_spec("api-restart-after"))["id"]

    for job_id in [running["id"], *queued, late]:
        done = stack.wait(job_id, timeout=90)
        assert_finished_once(stack, done, attempts=1)
    finished = time.monotonic()
    with stack.client() as c:
        listed = c.get("/api/v1/jobs", params={"status": "succeeded"}).json()
    assert listed["total"] == 4
    record_timing(
        fault="API SIGKILL + restart mid-job",
        kill_to_api_back_s=round(back - killed, 2),
        kill_to_all_finished_s=round(finished - killed, 2),
    )


@contextlib.contextmanager
def database_blocked(pg_admin: str, database_url: str) -> Iterator[None]:
    """No new connection to the database, and every open one terminated, until the block exits (always)."""
    import psycopg

    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            yield
        finally:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def test_database_unreachable_gives_503_and_the_job_survives(services, pg_admin: str) -> None:
    stack = services(ROBUSTLAB_LEASE_SECONDS="30", ROBUSTLAB_RECOVERY_INTERVAL="1", ROBUSTLAB_PROGRESS_INTERVAL="0.2")
    stack.start_api()
    stack.start_worker("worker")
    stack.wait_ready("api", "worker")

    job = stack.submit(long_spec("db-outage"))
    waiting = stack.submit(tiny_spec("db-outage-queued"))  # claimed by the worker after the outage
    stack.wait_until(job["id"], training_past(20), what="training")

    with database_blocked(pg_admin, stack.database_url), stack.client() as c:
        blocked = time.monotonic()
        for method, path, body in [
            ("GET", f"/api/v1/jobs/{job['id']}", None),
            ("GET", "/api/v1/jobs", None),
            ("POST", "/api/v1/jobs", tiny_spec("during-outage")),
        ]:
            start = time.monotonic()
            r = c.request(method, path, json=body)
            assert r.status_code == 503, (method, path, r.status_code, r.text)
            assert r.headers["content-type"] == "application/json" and r.headers["retry-after"]
            assert r.json()["detail"].startswith("database unavailable"), r.text
            assert time.monotonic() - start < 5, "a 503 must come at once, not after a hang"
        health = c.get("/healthz")
        assert health.status_code == 503 and health.json()["database"]["ok"] is False
        assert health.json()["broker"]["ok"] is True
        # the worker finishes training meanwhile and keeps retrying to store the results
        stack.wait_for_log("worker", rf"job {job['id']}: database unreachable \(store results\)", timeout=60)
    restored = time.monotonic()

    done = stack.wait(job["id"], timeout=60)
    finished = time.monotonic()
    assert_finished_once(stack, done, attempts=1)  # not failed, not re-run: the same attempt stored its results
    assert_finished_once(stack, stack.wait(waiting["id"], timeout=60), attempts=1)
    with stack.client() as c:
        assert c.get(f"/api/v1/jobs/{job['id']}").status_code == 200
        assert c.get("/healthz").status_code == 200
    record_timing(
        fault="database refuses connections mid-job",
        outage_s=round(restored - blocked, 2),
        restored_to_finished_s=round(finished - restored, 2),
    )
