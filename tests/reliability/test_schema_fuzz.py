"""Property-based fuzzing of the running API against its own OpenAPI schema (schemathesis).

A real ``uvicorn`` process on a fresh PostgreSQL database and Redis (no worker: submitted jobs stay queued) is
fuzzed with requests that schemathesis generates from the schema (built in-process at collection, and checked to
be the one the server serves at ``/openapi.json``; schemathesis' lazy ``from_fixture`` loader does not work with
pytest 9) for every operation. Every response is checked: no 5xx, a documented status
code, a body and headers that conform to the schema, invalid input rejected. Bounded for CI: ``MAX_EXAMPLES`` per
operation, derandomized, no coverage phase, a per-request deadline, no example database on disk.
"""

from __future__ import annotations

import base64
import copy
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from reliability_harness import Services
from schemathesis import checks
from schemathesis.config import SchemathesisConfig
from service_helpers import record_timing, tiny_spec

pytestmark = [pytest.mark.services, pytest.mark.e2e, pytest.mark.timeout(300)]

#: examples per operation. CI runs the same derandomized examples every time (not flaky) and skips schemathesis'
#: coverage phase (boundary values of every field: ~20 s for the job spec alone on 2 cores);
#: ``ROBUSTLAB_FUZZ_EXAMPLES=500 ROBUSTLAB_FUZZ_RANDOM=1`` hunts longer, at random, with the coverage phase.
MAX_EXAMPLES = int(os.environ.get("ROBUSTLAB_FUZZ_EXAMPLES", "25"))
THOROUGH = os.environ.get("ROBUSTLAB_FUZZ_RANDOM", "") not in ("", "0")
#: input-validation strictness, not response conformance: unknown query parameters are ignored, as HTTP APIs do
#: (``?=false`` is "accepted": negative_data_rejection; the spec itself is strict), and the spec has cross-field
#: rules the JSON schema cannot express (an ``explicit`` model with a ``theta``: positive_data_acceptance)
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


# ---------------------------------------------------------------------------------------------------- hostile values
#: raw JSON tokens put in place of every numeric field of the job spec: non-finite numbers (which Python's parser
#: accepts), numbers that overflow a double or an int64, lone surrogates, and loose types
HOSTILE_JSON = [
    "NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" + "0" * 400, "-" + "9" * 4000, "1e-999",
    '"\\ud800"', '"a\\udfff\\u0000"', "true", '"10"', "[NaN]", '{"x": Infinity}',
]  # fmt: skip
#: query and path values, percent-encoded as sent (``%ED%A0%80`` is the UTF-8 form of a lone surrogate)
HOSTILE_PARAMS = [
    "NaN", "inf", "-Infinity", "1e999", "9" * 400, "-9223372036854775809", "%ED%A0%80", "%FF", "%00", "a%00b",
]  # fmt: skip
HOSTILE_CURSORS = [
    '{"v":1,"id":"z","r":1e999,"q":"a"}', '{"v":NaN,"id":"z","r":1,"q":"a"}', '{"v":1,"id":"\\ud800","r":1,"q":"a"}',
    '{"v":1,"id":"z","r":99999999999999999999999,"q":"a"}', "[1e999]", '"\\ud800"',
]  # fmt: skip


def _resolve(node: dict, components: dict) -> dict:
    while "$ref" in node:
        node = components[node["$ref"].rsplit("/", 1)[1]]
    return node


def numeric_paths(node: dict, components: dict, path: tuple = (), seen: frozenset = frozenset()) -> list[tuple]:
    """Every path to a number (an array's first element for a list of numbers) in a JSON schema."""
    ref = node.get("$ref")
    if ref in seen:
        return []
    node = _resolve(node, components)
    seen = seen | {ref} if ref else seen
    found: list[tuple] = []
    for option in node.get("anyOf", []) + node.get("oneOf", []) + node.get("allOf", []):
        found += numeric_paths(option, components, path, seen)
    if node.get("type") in ("integer", "number"):
        found.append(path)
    if node.get("type") == "array" and "items" in node:
        found += numeric_paths(node["items"], components, (*path, 0), seen)
    for name, child in node.get("properties", {}).items():
        found += numeric_paths(child, components, (*path, name), seen)
    return sorted(set(found), key=str)


def _with_placeholder(spec: dict, path: tuple) -> str:
    """``spec`` as JSON text with ``@@HOSTILE@@`` (a JSON string) at ``path``; missing objects are created."""
    node: Any = spec
    for key, next_key in zip(path, [*path[1:], None], strict=True):
        if next_key is None:
            break
        if isinstance(node, list):  # into its first items (created when missing: e.g. a list of stage objects)
            if not node:
                node.append(None)
            index = min(key, len(node) - 1)
            if not isinstance(node[index], (dict, list)):
                node[index] = [None] if isinstance(next_key, int) else {}
            node = node[index]
            continue
        if not isinstance(node.get(key), (dict, list)):
            node[key] = [None] if isinstance(next_key, int) else {}
        node = node[key]
    last = path[-1]
    if isinstance(node, list):
        node[0 if not node else min(last, len(node) - 1)] = "@@HOSTILE@@"
    else:
        node[last] = "@@HOSTILE@@"
    return json.dumps(spec)


def test_hostile_values_in_every_field_are_never_a_5xx(fuzzed_api: Services) -> None:
    """Every numeric field of the job spec gets every hostile JSON token; every query and path parameter of every
    operation gets every hostile value; the leaderboard (API and page) gets hostile cursors. No answer ≥ 500."""
    schema = _openapi()
    components = schema["components"]["schemas"]
    body = schema["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    paths = numeric_paths(body, components)
    assert len(paths) > 40, paths  # the walk found the spec's numbers (sizes, rates, ε, σ, steps, seeds, …)
    failures: list[tuple] = []
    sent = 0
    with fuzzed_api.client() as c:
        headers = {"Content-Type": "application/json"}
        for path in paths:
            text = _with_placeholder(copy.deepcopy(tiny_spec("hostile")), path)
            for token in HOSTILE_JSON:
                r = c.post("/api/v1/jobs", content=text.replace('"@@HOSTILE@@"', token), headers=headers)
                sent += 1
                if r.status_code >= 500:
                    failures.append(("POST /api/v1/jobs", path, token, r.status_code, r.text[:200]))
        for template, operations in schema["paths"].items():
            for method, operation in operations.items():
                params = operation.get("parameters", [])
                for param in params:
                    if param["in"] not in ("query", "path"):
                        continue
                    for value in HOSTILE_PARAMS:
                        url = template
                        query = ""
                        for other in params:
                            if other["in"] == "path":
                                url = url.replace("{" + other["name"] + "}", value if other is param else "x")
                        if param["in"] == "query":
                            query = f"?{param['name']}={value}"
                        r = c.request(method.upper(), url + query)
                        sent += 1
                        if r.status_code >= 500:
                            failures.append((method.upper(), template, param["name"], value, r.status_code))
        for payload in HOSTILE_CURSORS:
            cursor = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
            for url in ("/api/v1/leaderboard", "/"):
                r = c.get(url, params={"cursor": cursor})
                sent += 1
                if r.status_code >= 500:
                    failures.append(("GET", url, payload, r.status_code))
    record_timing(fault="hostile values in every field", requests=sent, responses_5xx=len(failures))
    assert not failures, failures[:10]
