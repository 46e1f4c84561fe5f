"""Input that Python's JSON parser accepts but JSON cannot carry back, and cursors no page ever handed out: each is
a 4xx naming the field, never a 500 (issue 18, item 5). On the real PostgreSQL, through the in-process app."""

from __future__ import annotations

import base64
import json

import pytest
from fastapi.testclient import TestClient
from service_helpers import tiny_spec

JSON_HEADERS = {"Content-Type": "application/json"}


def _with(spec_text: str, field: str, token: str) -> str:
    """The spec's JSON text with the value of ``"field": …`` (its first occurrence) replaced by a raw token."""
    marker = f'"{field}": '
    start = spec_text.index(marker) + len(marker)
    end = min(i for i in (spec_text.find(",", start), spec_text.find("}", start)) if i >= 0)
    return spec_text[:start] + token + spec_text[end:]


@pytest.mark.parametrize(
    ("field", "token", "loc"),
    [
        ("lr", "NaN", ["body", "train", "lr"]),
        ("lr", "Infinity", ["body", "train", "lr"]),
        ("h", "-Infinity", ["body", "model", "h"]),
        ("h", "1e999", ["body", "model", "h"]),  # overflows a double: Python parses it as inf
        ("name", '"\\ud800"', ["body", "name"]),  # a lone surrogate: not encodable as UTF-8
        ("name", '"ok\\udfff"', ["body", "name"]),
    ],
)
def test_unencodable_json_body_is_422_naming_the_field(pg_client: TestClient, field, token, loc) -> None:
    body = _with(json.dumps(tiny_spec("hostile")), field, token)
    r = pg_client.post("/api/v1/jobs", content=body, headers=JSON_HEADERS)
    assert r.status_code == 422, (token, r.status_code, r.text)
    assert loc in [error["loc"] for error in r.json()["detail"]], r.text
    assert pg_client.get("/api/v1/jobs").json()["total"] == 0


def test_a_lone_surrogate_in_a_free_text_field_is_not_stored(pg_client: TestClient) -> None:
    """``checkpoint`` takes any string: without the check it reaches PostgreSQL, which cannot encode it."""
    body = json.dumps(tiny_spec("surrogate", checkpoint="PLACEHOLDER")).replace("PLACEHOLDER", "a\\ud800b")
    r = pg_client.post("/api/v1/jobs", content=body, headers=JSON_HEADERS)
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "checkpoint"] and error["type"] == "string_unicode"
    assert error["input"] == "a\\ud800b"  # echoed escaped, so the 422 itself is valid JSON


def test_a_non_finite_number_in_a_nested_list_is_422(pg_client: TestClient) -> None:
    spec = tiny_spec("nested")
    body = json.dumps(spec).replace('"sigmas": [0, 0.1]', '"sigmas": [0, NaN, Infinity]')
    r = pg_client.post("/api/v1/jobs", content=body, headers=JSON_HEADERS)
    assert r.status_code == 422, r.text
    locations = [error["loc"] for error in r.json()["detail"]]
    assert ["body", "evaluate", "gaussian", "sigmas", 1] in locations
    assert ["body", "evaluate", "gaussian", "sigmas", 2] in locations


def _cursor(payload: str) -> str:
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


HOSTILE_CURSORS = [
    '{"v":1,"id":"z","r":1e999,"q":"a"}',  # int(inf): OverflowError
    '{"v":1e999,"id":"z","r":1,"q":"a"}',
    '{"v":NaN,"id":"z","r":1,"q":"a"}',
    '{"v":1,"id":"z","r":-5,"q":"a"}',
    '{"v":1,"id":"z","r":99999999999999999999999,"q":"a"}',
    '{"v":1,"id":"\\ud800","r":1,"q":"a"}',
    '{"v":1,"id":"z","r":1,"q":["a"]}',
    "[1, 2]",
    "null",
]


@pytest.mark.parametrize("payload", HOSTILE_CURSORS)
def test_hostile_leaderboard_cursor_is_422_on_the_api_and_the_page(pg_client: TestClient, payload: str) -> None:
    cursor = _cursor(payload)
    r = pg_client.get("/api/v1/leaderboard", params={"cursor": cursor})
    assert r.status_code == 422, (payload, r.status_code, r.text)
    assert r.json()["detail"][0]["loc"] == ["query", "cursor"]
    page = pg_client.get("/", params={"cursor": cursor})
    assert page.status_code == 422, (payload, page.status_code)
    assert "cursor" in page.text


def forged_checkpoint(entries: int) -> bytes:
    """A safetensors file whose header lists ``entries`` empty tensors (valid to a parser, just huge)."""
    header = ",".join(f'"t{i}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}' for i in range(entries))
    data = ("{" + header + "}").encode()
    return len(data).to_bytes(8, "little") + data


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (500_000, "header of"),  # ~28 MB of header: refused from its 8-byte length, before any parsing
        (20_000, "20000 tensors, over the limit"),  # ~1.1 MB: within the byte bound, over the entry bound
    ],
)
def test_a_forged_checkpoint_header_is_refused_before_parsing(pg_client: TestClient, entries: int, message: str):
    from api.uploads import MAX_CHECKPOINT_TENSORS, MAX_HEADER_BYTES

    content = forged_checkpoint(entries)
    files = {"file": ("w.safetensors", content, "application/octet-stream")}
    model = json.dumps({"family": "explicit", "width": 8, "depth": 4, "h": 0.2})
    r = pg_client.post("/api/v1/artifacts/checkpoints", files=files, data={"model": model, "dataset": "spirals"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert message in detail and (str(MAX_HEADER_BYTES) in detail or str(MAX_CHECKPOINT_TENSORS) in detail)


@pytest.mark.parametrize(
    ("overrides", "field", "estimate"),
    [
        (  # issue 18: 10 000 steps × 100 restarts × (64 ε + the step-doubling check) × 2 norms passed the old budget
            {
                "train": {"epochs": 5},
                "evaluate": {
                    "pgd": {"norm": ["Linf", "L2"], "eps": [0.01 * i for i in range(1, 65)], "steps": 10_000,
                            "restarts": 100},
                },
            },
            "evaluate",
            "evaluation passes over the test set 1.32e+08 exceeds the limit 1e+06 (ROBUSTLAB_MAX_EVAL_PASSES)",
        ),
        (  # width 4096 × depth 1000: ≈ 34 · 10⁹ parameters, 125 GiB of weights
            {"model": {"family": "explicit", "width": 4096, "depth": 1000}, "train": {"epochs": 1},
             "dataset": {"name": "spirals", "n_train": 2, "n_test": 1}},
            "model",
            "parameters 3.36e+10 exceeds the limit 1e+08 (ROBUSTLAB_MAX_PARAMETERS)",
        ),
        (  # full-batch training of 1000 samples through 1000 steps of width 256 (limit lowered to 8e9 below)
            {"model": {"family": "explicit", "width": 256, "depth": 1000}, "train": {"epochs": 1},
             "dataset": {"name": "digits", "n_train": 1000, "n_test": 797}},
            "model",
            "activation memory (bytes) 8.19e+09 exceeds the limit 8e+09 (ROBUSTLAB_MAX_ACTIVATION_BYTES)",
        ),
    ],
)  # fmt: skip
def test_a_job_over_an_estimated_limit_is_422_naming_estimate_and_limit(
    make_pg_client, overrides, field: str, estimate: str
) -> None:
    client = make_pg_client(max_activation_bytes=8e9) if "activation" in estimate else make_pg_client()
    r = client.post("/api/v1/jobs", json=tiny_spec("too-large", **overrides))
    assert r.status_code == 422, r.text
    messages = {tuple(e["loc"]): e["msg"] for e in r.json()["detail"]}
    assert messages.get(("body", field)) == f"job too large: estimated {estimate}", messages
    assert client.get("/api/v1/jobs").json()["total"] == 0


def test_limits_are_settings(make_pg_client) -> None:
    spec = tiny_spec("limited", evaluate={"pgd": {"norm": ["Linf"], "eps": [0.05], "steps": 100, "restarts": 2}})
    assert make_pg_client(max_eval_passes=100).post("/api/v1/jobs", json=spec).status_code == 422
    assert make_pg_client(max_eval_passes=1000).post("/api/v1/jobs", json=spec).status_code == 201
