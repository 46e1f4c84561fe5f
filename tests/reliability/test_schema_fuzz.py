"""Property-based fuzzing of the running API against its own OpenAPI schema (schemathesis).

A real ``uvicorn`` process on a fresh PostgreSQL database and Redis (no worker: submitted jobs stay queued) is
fuzzed with requests that schemathesis generates from the schema (built in-process at collection, and checked to
be the one the server serves at ``/openapi.json``; schemathesis' lazy ``from_fixture`` loader does not work with
pytest 9) for every operation. Every response is checked: no 5xx, a documented status
code, a body and headers that conform to the schema, invalid input rejected. Bounded for CI: ``MAX_EXAMPLES`` per
operation, derandomized, no coverage phase, a per-request deadline, no example database on disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from reliability_harness import Services
from schemathesis import checks
from schemathesis.config import SchemathesisConfig
from service_helpers import tiny_spec

pytestmark = [pytest.mark.services, pytest.mark.e2e, pytest.mark.timeout(300)]

#: examples per operation. CI runs the same derandomized examples every time (not flaky) and skips schemathesis'
#: coverage phase (boundary values of every field: ~20 s for the job spec alone on 2 cores);
#: ``ROBUSTLAB_FUZZ_EXAMPLES=500 ROBUSTLAB_FUZZ_RANDOM=1`` hunts longer, at random, with the coverage phase.
MAX_EXAMPLES = int(os.environ.get("ROBUSTLAB_FUZZ_EXAMPLES", "25"))
THOROUGH = os.environ.get("ROBUSTLAB_FUZZ_RANDOM", "") not in ("", "0")
#: input-validation strictness, not response conformance: the spec is pydantic in lax mode (``false`` is accepted
#: as the integer ``0``: negative_data_rejection) and has cross-field rules the JSON schema cannot express (an
#: ``explicit`` model with a ``theta``: positive_data_acceptance)
EXCLUDED_CHECKS = [checks.negative_data_rejection, checks.positive_data_acceptance]
#: the operations fuzzed: every one in the schema (jobs, artifacts and uploads, leaderboard, compare, health);
#: ``ROBUSTLAB_FUZZ_PATHS`` narrows them with a regex on the path
OPERATIONS = os.environ.get("ROBUSTLAB_FUZZ_PATHS", ".*")


@pytest.fixture(scope="module")
def fuzzed_api(make_pg_database, reliability_broker, tmp_path_factory) -> Iterator[Services]:
    """The API in its production mode when the code has it: API keys required for every route (so schemathesis'
    ``ignored_auth`` check probes the auth), rate limit off (the fuzzer is one fast client); ``stack.headers`` has
    the key of scope ``admin`` that the generated requests carry."""
    from db.migrate import upgrade
    from db.session import session_scope

    database_url = make_pg_database()
    upgrade(database_url)
    reliability_broker.flush()
    env: dict[str, str] = {}
    headers: dict[str, str] = {}
    try:
        from api.security import create_api_key
    except ImportError:  # a version of the API without keys: open
        pass
    else:
        with session_scope(database_url) as session:
            _key, token = create_api_key(session, "schema-fuzz", "admin")
        env = {"ROBUSTLAB_AUTH": "keys", "ROBUSTLAB_PUBLIC_READ": "false", "ROBUSTLAB_RATE_LIMIT": "0"}
        headers = {"Authorization": f"Bearer {token}"}
    stack = Services.create(tmp_path_factory.mktemp("schema-fuzz"), database_url, reliability_broker.url, **env)
    stack.headers = headers
    try:
        stack.start_api()
        stack.wait_ready("api")
        stack.submit(tiny_spec("fuzz-seed"))  # a stored job for the list and read operations
        yield stack
    finally:
        stack.stop()
        reliability_broker.flush()


def _openapi() -> dict:
    """The schema the API serves, built in-process at collection (a test checks the live one is the same)."""
    from api.main import create_app

    return create_app(recovery=False).openapi()


schema = schemathesis.openapi.from_dict(
    _openapi(), config=SchemathesisConfig.from_dict({"phases": {"coverage": {"enabled": THOROUGH}}})
).include(path_regex=OPERATIONS)


def test_the_served_schema_is_the_fuzzed_one(fuzzed_api: Services) -> None:
    with fuzzed_api.client() as c:
        assert c.get("/openapi.json").json() == _openapi()


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=not THOROUGH,
    deadline=10_000,  # ms per example: a request that hangs is a finding
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_api_conforms_to_its_schema(case, fuzzed_api: Services) -> None:
    excluded = EXCLUDED_CHECKS if fuzzed_api.headers else [*EXCLUDED_CHECKS, checks.ignored_auth]
    case.call_and_validate(
        base_url=fuzzed_api.base_url, headers=fuzzed_api.headers, timeout=10, excluded_checks=excluded
    )
