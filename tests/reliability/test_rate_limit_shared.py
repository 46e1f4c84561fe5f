"""The rate limit is one limit for every API process, and invalid keys are limited too (issue 18, item 7).

Two real ``uvicorn`` processes on one PostgreSQL database and one Redis (the counters' store: the broker's Redis),
``ROBUSTLAB_AUTH=keys``, 1 request/s with bursts of 6 (6 requests per 6 s window). Requests alternate between the
two processes: a valid key gets 6 answers in all, then 429 from either (per-process buckets gave 12); a client
sending invalid keys gets 6 × 401, then 429 with ``Retry-After`` (before: 401 for ever, each a database lookup).
"""

from __future__ import annotations

import itertools

import pytest
from reliability_harness import Services

pytestmark = [pytest.mark.services, pytest.mark.e2e, pytest.mark.timeout(180)]

LIMITED = {"ROBUSTLAB_AUTH": "keys", "ROBUSTLAB_RATE_LIMIT": "1", "ROBUSTLAB_RATE_LIMIT_BURST": "6"}


def test_two_api_processes_share_one_limit(services, tmp_path) -> None:
    from api.security import create_api_key
    from db.session import session_scope

    first = services(**LIMITED)
    second = Services.create(tmp_path / "second", first.database_url, first.broker_url, **LIMITED)
    try:
        first.start_api()
        second.start_api()
        first.wait_ready("api")
        second.wait_ready("api")
        with session_scope(first.database_url) as session:
            _key, token = create_api_key(session, "shared-limit", "read")
        with first.client() as a, second.client() as b:
            clients = itertools.cycle([a, b])
            valid = [next(clients).get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}) for _ in range(10)]
            codes = [r.status_code for r in valid]
            assert codes[:6] == [200] * 6 and set(codes[6:]) == {429}, codes
            assert {r.headers.get("retry-after") is not None for r in valid[6:]} == {True}

            bad = "rlk_deadbeef_" + "x" * 43
            invalid = [next(clients).get("/api/v1/jobs", headers={"Authorization": f"Bearer {bad}"}) for _ in range(10)]
            codes = [r.status_code for r in invalid]
            assert codes[:6] == [401] * 6 and set(codes[6:]) == {429}, codes
            assert int(invalid[-1].headers["retry-after"]) >= 1
    finally:
        second.stop()
