"""The broker loses every message (``FLUSHDB`` of the test's Redis index, as a Redis restart without persistence
would) while jobs are queued and no worker runs: the API's recovery sweep re-sends the jobs the database says are
queued, a worker started afterwards runs each of them once.

Which sweeper: the API's (:class:`api.dispatch.RecoveryLoop`, here every 0.5 s); the worker has none. A queued job
is re-sent ``redispatch_after`` (here 1 s) after its submission and then with a back-off that doubles with its age
(:func:`db.recovery.claim_redispatch`), so jobs that merely wait collect a few duplicate messages, not one per sweep.
"""

from __future__ import annotations

import math
import time
from collections import Counter

import pytest
from reliability_harness import assert_finished_once, queue_messages
from service_helpers import record_timing, tiny_spec

pytestmark = [pytest.mark.services, pytest.mark.e2e, pytest.mark.timeout(180)]


def test_flushed_broker_jobs_are_re_sent_and_run_once(services, reliability_broker) -> None:
    after, sweep = 1.0, 0.5
    stack = services(
        ROBUSTLAB_REDISPATCH_AFTER=str(after),
        ROBUSTLAB_REDISPATCH_MAX_INTERVAL="30",
        ROBUSTLAB_RECOVERY_INTERVAL=str(sweep),
        ROBUSTLAB_LEASE_SECONDS="10",
    )
    stack.start_api()
    stack.wait_ready("api")
    redis = reliability_broker.client

    submitted = time.monotonic()
    ids = [stack.submit(tiny_spec(f"flushed-{i}"))["id"] for i in range(3)]
    in_queue = queue_messages(redis)
    assert sorted(in_queue) == sorted(ids), f"one message per job expected: {in_queue}\n{stack.tail()}"

    reliability_broker.flush()
    flushed = time.monotonic()
    assert queue_messages(redis) == []

    deadline = time.monotonic() + 20
    while set(queue_messages(redis)) != set(ids):
        assert time.monotonic() < deadline, f"not re-sent: {queue_messages(redis)}\n{stack.tail()}"
        time.sleep(0.05)
    resent = time.monotonic()

    stack.start_worker("worker")  # a few seconds: the sweep goes on meanwhile
    stack.wait_ready("worker")
    worker_ready = time.monotonic()
    # bounded duplicates: re-sends at ages ≈ 1, 2, 4, 8 … s — not one per 0.5 s sweep
    per_job = Counter(queue_messages(redis))
    age = worker_ready - submitted
    assert max(per_job.values(), default=0) <= math.ceil(math.log2(age / after)) + 2, (per_job, age)

    done = [stack.wait(job_id, timeout=60) for job_id in ids]
    finished = time.monotonic()
    for job in done:
        assert_finished_once(stack, job, attempts=1)  # the duplicates were dropped by the claim
    record_timing(
        fault="broker FLUSHDB with 3 queued jobs, no worker",
        flush_to_resent_s=round(resent - flushed, 2),
        worker_ready_to_all_finished_s=round(finished - worker_ready, 2),
        messages_per_job_at_worker_start=dict(Counter(per_job.values())),
        job_age_at_worker_start_s=round(age, 1),
    )
