"""A worker SIGKILLed mid-training, for real: the job comes back on another worker, resumes from its last checkpoint
and ends with the same metrics, to the last bit, as an uninterrupted run of the same spec in this process (issue 14).

Two Celery workers on the Redis broker and a PostgreSQL database, the API sweeping every second, leases of 3 s
(``FAST_RECOVERY``). The job trains for 300 epochs of 5 batches with a checkpoint every 20; the worker running it
is killed (its whole process group) once a checkpoint exists and training is past it. Its lease expires, the API's sweep
re-sends the job, the other worker claims it (attempt 2), loads ``artifacts_dir/<id>/checkpoints`` and goes on
at epoch k + 1, reporting ``resumed_from: k`` in its progress.
"""

from __future__ import annotations

import time

import pytest
from reliability_harness import FAST_RECOVERY, assert_finished_once, training_past
from service_helpers import record_timing, tiny_spec

from core.metrics import is_timing
from core.spec import JobSpec
from db import jobs
from db.session import session_scope
from evaluation.checkpoints import checkpoint_name
from evaluation.runner import run_job

pytestmark = [pytest.mark.services, pytest.mark.e2e, pytest.mark.timeout(180)]

EPOCHS, EVERY = 300, 20


def test_a_job_whose_worker_was_killed_resumes_from_its_checkpoint_to_the_same_metrics(services) -> None:
    spec = tiny_spec("resume-after-kill", train={"epochs": EPOCHS, "lr": 0.02, "batch_size": 20,
                                                 "checkpoint_every": EVERY})  # fmt: skip
    stack = services(**FAST_RECOVERY)
    stack.start_api()
    stack.start_worker("worker-a")
    stack.start_worker("worker-b")
    reference = run_job(JobSpec.model_validate(spec))  # uninterrupted, in this process, while the services start
    stack.wait_ready("api", "worker-a", "worker-b")

    job = stack.submit(spec)
    checkpoints = stack.artifacts_dir / job["id"] / "checkpoints"

    def past_a_checkpoint(j: dict) -> bool:
        return training_past(EVERY + 5)(j) and checkpoints.is_dir() and any(checkpoints.glob("epoch-*.pt"))

    running = stack.wait_until(job["id"], past_a_checkpoint, what=f"training past epoch {EVERY + 5}")
    victim = "worker-a" if running["worker"].startswith("worker-a-") else "worker-b"
    killed = stack.kill(victim)  # SIGKILL to its process group: no shutdown code runs
    killed_at = running["progress"]["epoch"]
    assert killed_at < EPOCHS

    resumed = stack.wait_until(
        job["id"], lambda j: j["attempts"] == 2 and (j.get("progress") or {}).get("resumed_from") is not None,
        timeout=60, what="resumed on the other worker",
    )  # fmt: skip
    came_back = time.monotonic()
    k = resumed["progress"]["resumed_from"]
    assert 0 < k and k % EVERY == 0 and k < EPOCHS, resumed["progress"]
    assert not resumed["worker"].startswith(f"{victim}-")
    done = stack.wait(job["id"], timeout=90)
    finished = time.monotonic()

    metrics = assert_finished_once(stack, done, attempts=2)
    timeless = {name: v for name, v in reference.metrics.items() if not is_timing(name)}
    assert {name: metrics[name] for name in timeless} == timeless  # ==: to the last bit
    with session_scope(stack.database_url) as s:
        info = jobs.get_job(s, job["id"]).info
    assert info["checkpoints"]["resumed_from"] == k and info["checkpoints"]["every"] == EVERY
    assert [p.name for p in checkpoints.iterdir()] == [checkpoint_name(EPOCHS)]  # pruned to the final one
    with stack.client() as c:  # the job page says so (and which device ran it)
        page = c.get(f"/jobs/{job['id']}").text
    assert f"resumed from the checkpoint of epoch {k}" in page and 'id="hardware">cpu' in page
    record_timing(
        fault="SIGKILL worker mid-training, resumed",
        killed_at_epoch=killed_at,
        resumed_from=k,
        kill_to_resumed_s=round(came_back - killed, 2),
        kill_to_finished_s=round(finished - killed, 2),
    )
