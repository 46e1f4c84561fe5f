"""SIGKILL a worker in the middle of a job, for real: the job comes back and finishes exactly once.

The job is killed while it trains (``progress.epoch`` seen in ``GET /jobs/{id}``). Leases are 3 s and the API
sweeps every second (``FAST_RECOVERY``). What brings the job back:

* prefork child killed: the worker's main process notices the dead child (billiard: seconds later, ~4-5 s here),
  rejects the message (``task_reject_on_worker_lost``) and it is redelivered; meanwhile the dead child's lease
  expired and the API's recovery sweep put the job back to ``queued`` and re-sent it. The new child claims
  whichever message comes first (a queued job, or a running one whose lease expired: attempt 2) and the other is
  dropped by the claim. Had the redelivery come while the lease was alive, it would have been dropped and the
  sweep's message would have run the job.
* whole worker killed (main process and child, ``killpg``): the message stays unacknowledged in Redis (redelivered
  only after the 1 h visibility timeout); the lease expires, the sweep re-sends the job, and the second worker runs
  it.

Either way the result rows are written once (one ``complete_job`` wins; a unique constraint backs it up).
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
from reliability_harness import FAST_RECOVERY, assert_finished_once, long_spec, training_past
from service_helpers import record_timing

pytestmark = [pytest.mark.services, pytest.mark.e2e, pytest.mark.timeout(180)]


def _pid_of(job: dict) -> int:
    """The job's worker column is ``<celery node>/<pid of the process running the task>``."""
    return int(job["worker"].rsplit("/", 1)[1])


def _parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _dead(pid: int, timeout: float = 10.0) -> bool:
    """``pid`` is gone or a zombie (its parent was killed too; init reaps it) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_sigkill_of_the_prefork_child_running_the_job(services) -> None:
    stack = services(**FAST_RECOVERY)
    stack.start_api()
    main = stack.start_worker("worker", pool="prefork")
    stack.wait_ready("api", "worker")

    job = stack.submit(long_spec("kill-child"))
    running = stack.wait_until(job["id"], training_past(20), what="training")
    child = _pid_of(running)
    assert child != main.pid and _parent_pid(child) == main.pid, "the job must run in a prefork child"

    os.kill(child, signal.SIGKILL)
    killed = time.monotonic()
    again = stack.wait_until(
        job["id"], lambda j: j["status"] == "running" and j["attempts"] == 2, timeout=60, what="running again"
    )
    redelivered = time.monotonic()
    done = stack.wait(job["id"], timeout=90)
    finished = time.monotonic()

    assert main.poll() is None, "the worker's main process survives the loss of a child"
    assert again["worker"] != running["worker"] and _pid_of(again) != child
    assert again["worker"].split("/")[0] == running["worker"].split("/")[0]  # same node, new child
    assert_finished_once(stack, done, attempts=2)
    assert "WorkerLostError" in stack.log_text("worker")  # Celery saw its child die and rejected the message
    # two messages brought the job back (the rejected one, the sweep's re-send): one ran it, the other is dropped
    stack.wait_for_log("worker", rf"job {job['id']}: not claimable")
    record_timing(
        fault="SIGKILL prefork child",
        kill_to_redelivered_s=round(redelivered - killed, 2),
        kill_to_finished_s=round(finished - killed, 2),
    )


def test_sigkill_of_the_whole_worker_moves_the_job_to_a_second_worker(services) -> None:
    stack = services(**FAST_RECOVERY)
    stack.start_api()
    stack.start_worker("worker-a", pool="prefork")
    stack.start_worker("worker-b", pool="prefork")
    stack.wait_ready("api", "worker-a", "worker-b")

    job = stack.submit(long_spec("kill-worker"))
    running = stack.wait_until(job["id"], training_past(20), what="training")
    victim = "worker-a" if running["worker"].startswith("worker-a-") else "worker-b"
    survivor = "worker-b" if victim == "worker-a" else "worker-a"
    child = _pid_of(running)

    killed = stack.kill(victim)  # SIGKILL to the process group: main process and its child
    assert _dead(child), "the prefork child died with its group"
    again = stack.wait_until(
        job["id"], lambda j: j["status"] == "running" and j["attempts"] == 2, timeout=60, what="running again"
    )
    redelivered = time.monotonic()
    assert again["worker"].startswith(f"{survivor}-")
    done = stack.wait(job["id"], timeout=90)
    finished = time.monotonic()

    assert_finished_once(stack, done, attempts=2)
    assert done["worker"].startswith(f"{survivor}-")
    assert re.search(r"recovery: 1 requeued", stack.log_text("api"))
    record_timing(
        fault="SIGKILL whole worker (process group)",
        kill_to_redelivered_s=round(redelivered - killed, 2),
        kill_to_finished_s=round(finished - killed, 2),
    )
