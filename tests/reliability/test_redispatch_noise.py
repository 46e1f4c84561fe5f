"""The recovery sweep re-sends only what the broker can have lost (issue 18, item 10).

Jobs that simply wait in the Redis queue (no worker runs) are not sent again however many sweeps pass (before:
a duplicate at ages ≈ 1, 2, 4 … × ``redispatch_after``; the issue saw 139 re-sends under load); once the queue is
wiped they are re-sent, one message each.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from reliability_harness import queue_messages
from service_helpers import tiny_spec

pytestmark = [pytest.mark.services, pytest.mark.e2e, pytest.mark.timeout(120)]


def test_waiting_jobs_are_not_re_sent_lost_ones_are(services, reliability_broker) -> None:
    stack = services(
        ROBUSTLAB_REDISPATCH_AFTER="0.5", ROBUSTLAB_REDISPATCH_MAX_INTERVAL="30", ROBUSTLAB_RECOVERY_INTERVAL="0.3"
    )
    stack.start_api()
    stack.wait_ready("api")
    redis = reliability_broker.client
    ids = [stack.submit(tiny_spec(f"waiting-{i}"))["id"] for i in range(4)]

    time.sleep(5)  # ~16 sweeps; the jobs are due at ages 0.5, 1, 2, 4 s
    assert Counter(queue_messages(redis)) == Counter(ids), queue_messages(redis)
    stack.wait_for_log("api", r"still waiting in the broker, not re-sent", timeout=5)

    reliability_broker.flush()
    deadline = time.monotonic() + 20
    while Counter(queue_messages(redis)) != Counter(ids):
        assert time.monotonic() < deadline, f"lost messages not re-sent once each: {queue_messages(redis)}"
        time.sleep(0.1)
    time.sleep(2)
    assert Counter(queue_messages(redis)) == Counter(ids), queue_messages(redis)
