"""``GET /api/v1/leaderboard?format=csv|robustbench`` (the app in-process, on SQLite and on PostgreSQL) and
``robustlab leaderboard --format …`` (against a real server): the same rows, filters, sort and cursor pages as the
JSON leaderboard, RobustBench's ``model_info`` form, and an unchanged JSON default."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner
from web_helpers import EPS, N_SEEDED, PGD_RESTARTS, PGD_STEPS, PLOTTED, Populated, Site, populate

from api.exports import CSV_FIXED, ROBUSTBENCH_MEDIA_TYPE
from db.migrate import upgrade

PERCENT = re.compile(r"^\d{1,3}\.\d{2}$")  # RobustBench's "94.78"
#: the keys of RobustBench's model_info/<dataset>/<threat model>/<model>.json files
ROBUSTBENCH_KEYS = {"link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                    "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "footnote"}  # fmt: skip


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)]
)  # fmt: skip
def export_db(request, tmp_path_factory) -> tuple[str, Path, Populated]:
    workdir = tmp_path_factory.mktemp(f"exports-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{workdir / 'robustlab.db'}"
    else:
        url = request.getfixturevalue("make_pg_database")()
    upgrade(url)
    return url, workdir / "artifacts", populate(url, workdir / "artifacts")


@pytest.fixture
def client(export_db, make_web_client) -> TestClient:
    url, artifacts, _ = export_db
    return make_web_client(url, artifacts)


def json_pages(client: TestClient, params: dict) -> list[dict]:
    entries, cursor = [], None
    for _ in range(100):
        r = client.get("/api/v1/leaderboard", params=params | ({"cursor": cursor} if cursor else {}))
        assert r.status_code == 200, r.text
        entries += r.json()["entries"]
        if not (cursor := r.json()["next_cursor"]):
            return entries
    raise AssertionError("no last page")


def export_pages(client: TestClient, params: dict, fmt: str) -> tuple[list, list[str]]:
    """Every page of an export, following ``X-Next-Cursor``: (rows or objects, headers of the CSV pages)."""
    items, headers, cursor = [], [], None
    for _ in range(100):
        r = client.get("/api/v1/leaderboard", params=params | {"format": fmt} | ({"cursor": cursor} if cursor else {}))
        assert r.status_code == 200, r.text
        if fmt == "csv":
            assert r.headers["content-type"].startswith("text/csv"), r.headers
            rows = list(csv.DictReader(io.StringIO(r.text)))
            headers.append(r.text.splitlines()[0])
            items += rows
        else:
            assert r.headers["content-type"] == ROBUSTBENCH_MEDIA_TYPE, r.headers
            items += r.json()
        cursor = r.headers.get("x-next-cursor")
        if not cursor:
            assert "link" not in r.headers
            return items, headers
        assert r.headers["link"].endswith('rel="next"') and cursor in r.headers["link"]
    raise AssertionError("no last page")


def test_csv_pages_hold_the_json_rows(client: TestClient) -> None:
    params = {"metric": "pgd_linf_acc@0.1", "order": "desc", "limit": 7}
    want = json_pages(client, params)
    rows, headers = export_pages(client, params, "csv")
    assert len(want) == N_SEEDED + len(PLOTTED)  # every job with the metric, over 4 pages
    assert [(int(r["rank"]), r["job_id"]) for r in rows] == [(e["rank"], e["job_id"]) for e in want]
    for row, entry in zip(rows, want, strict=True):
        assert float(row["value"]) == entry["value"] and row["metric"] == "pgd_linf_acc@0.1"
        assert (row["name"], row["family"], row["dataset"], row["task"]) == (
            entry["name"], entry["family"], entry["dataset"], entry["task"]
        )  # fmt: skip
        for name, value in entry["metrics"].items():
            assert float(row[name]) == value, (row["job_id"], name)  # full precision, not rounded
        assert json.loads(row["hyper_parameters"]) == entry["hyper_parameters"]
    assert all(h.split(",")[: len(CSV_FIXED)] == list(CSV_FIXED) for h in headers)


def test_csv_filters_and_ascending_sort(client: TestClient) -> None:
    params = {"metric": "lipschitz_bound", "order": "asc", "family": "implicit", "limit": 500}
    rows, _ = export_pages(client, params, "csv")
    want = json_pages(client, params)
    assert [r["job_id"] for r in rows] == [e["job_id"] for e in want] and rows
    assert {r["family"] for r in rows} == {"implicit"}
    values = [float(r["value"]) for r in rows]
    assert values == sorted(values)


def test_csv_of_an_empty_slice_is_its_header(client: TestClient) -> None:
    r = client.get("/api/v1/leaderboard", params={"format": "csv", "dataset": "no-such-dataset"})
    assert r.status_code == 200 and r.text.splitlines() == [r.text.splitlines()[0]]
    assert r.text.startswith(",".join(CSV_FIXED))


def test_robustbench_model_info(client: TestClient, export_db) -> None:
    _, _, data = export_db
    params = {"metric": "pgd_l2_acc@0.05", "order": "desc", "limit": 2}  # only the plotted jobs have ε = 0.05
    models, _ = export_pages(client, params, "robustbench")
    want = json_pages(client, params)
    assert [m["job_id"] for m in models] == [e["job_id"] for e in want] and len(models) == len(PLOTTED)
    names = {job_id: name for name, job_id in data.ids.items()}
    for model in models:
        metrics = data.metrics[names[model["job_id"]]]
        assert ROBUSTBENCH_KEYS <= model.keys(), ROBUSTBENCH_KEYS - model.keys()
        assert model["name"] == names[model["job_id"]]
        assert model["threat_model"] == "L2" and model["eps"] == "0.05"
        assert model["clean_acc"] == f"{100 * metrics['clean_acc']:.2f}"
        assert model["autoattack_acc"] == model["reported"] == f"{100 * metrics['pgd_l2_acc@0.05']:.2f}"
        assert model["certified_acc"] == f"{100 * metrics['certified_l2_acc@0.05']:.2f}"
        assert all(PERCENT.match(model[k]) for k in ("clean_acc", "autoattack_acc", "reported", "certified_acc"))
        assert model["attack"] == f"PGD-L2 (torchattacks), {PGD_STEPS} steps, {PGD_RESTARTS} restarts"
        assert "not AutoAttack" in model["footnote"] and "torchattacks 3.5.1" in model["footnote"]
        assert model["additional_data"] is False and model["number_forward_passes"] == 1
        assert model["dataset"] == "spirals" and model["link"].endswith(f"/jobs/{model['job_id']}")
        assert "width 8" in model["architecture"] and "depth 4" in model["architecture"]
    implicit = next(m for m in models if m["name"] == "web-implicit")
    assert "θ=0.5" in implicit["architecture"] and "Reshniak" in implicit["paper"]


def test_robustbench_without_a_pgd_metric_takes_each_jobs_largest_linf_eps(client: TestClient, export_db) -> None:
    _, _, data = export_db
    r = client.get("/api/v1/leaderboard", params={"format": "robustbench", "dataset": "spirals", "limit": 500})
    models = r.json()
    assert r.status_code == 200 and models
    for model in models:
        assert model["threat_model"] == "Linf" and model["eps"] == f"{max(EPS):g}"
    plotted = {m["name"]: m for m in models if m["name"] in PLOTTED}
    for name, model in plotted.items():
        assert model["autoattack_acc"] == f"{100 * data.metrics[name]['pgd_linf_acc@0.1']:.2f}"
        assert model["attack"] == f"PGD-Linf (torchattacks), {PGD_STEPS} steps, {PGD_RESTARTS} restarts"


def test_json_stays_the_default_and_bad_formats_are_422(client: TestClient) -> None:
    plain = client.get("/api/v1/leaderboard", params={"limit": 3})
    explicit = client.get("/api/v1/leaderboard", params={"limit": 3, "format": "json"})
    assert plain.status_code == explicit.status_code == 200
    assert plain.headers["content-type"] == "application/json" and plain.json() == explicit.json()
    assert set(plain.json()) == {
        "metric", "order", "dataset", "family", "task", "current", "protocol_version", "limit", "entries", "next_cursor"
    }  # fmt: skip
    assert "x-next-cursor" not in plain.headers
    bad = client.get("/api/v1/leaderboard", params={"format": "xml"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "format"]


def test_openapi_documents_the_formats_and_leaves_the_pages_out(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/api/v1/leaderboard"]["get"]
    (param,) = [p for p in operation["parameters"] if p["name"] == "format"]
    assert param["schema"]["enum"] == ["json", "csv", "robustbench"] and param["schema"]["default"] == "json"
    content = operation["responses"]["200"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/Leaderboard"}
    assert {"text/csv", ROBUSTBENCH_MEDIA_TYPE} <= content.keys()
    assert "X-Next-Cursor" in operation["responses"]["200"]["headers"]
    assert not {"/", "/jobs/{job_id}", "/compare", "/login"} & schema["paths"].keys()


# ---------------------------------------------------------------------------------------------------- CLI
def cli(*args: str):
    from cli.main import app

    return CliRunner().invoke(app, list(args))


def test_cli_leaderboard_formats(web_site: Site) -> None:
    server = ["--server", web_site.base_url, "--metric", "pgd_linf_acc@0.1", "--limit", "5"]
    as_csv = cli("leaderboard", "--format", "csv", *server)
    assert as_csv.exit_code == 0, as_csv.output
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    as_json = cli("leaderboard", "--format", "json", *server)
    board = json.loads(as_json.stdout)
    assert [r["job_id"] for r in rows] == [e["job_id"] for e in board["entries"]] and len(rows) == 5
    assert "next page: --cursor" in as_csv.stderr
    cursor = as_csv.stderr.split("--cursor", 1)[1].split()[0]
    second = cli("leaderboard", "--format", "csv", "--cursor", cursor, *server)
    assert [int(r["rank"]) for r in csv.DictReader(io.StringIO(second.stdout))] == [6, 7, 8, 9, 10]

    as_rb = cli("leaderboard", "--format", "robustbench", *server)
    models = json.loads(as_rb.stdout)
    assert [m["job_id"] for m in models] == [e["job_id"] for e in board["entries"]]
    assert all(PERCENT.match(m["autoattack_acc"]) and m["threat_model"] == "Linf" for m in models)

    table = cli("leaderboard", *server)
    assert table.exit_code == 0 and "leaderboard: pgd_linf_acc@0.1 (desc)" in table.stdout
    bad = cli("leaderboard", "--format", "xml", *server)
    assert bad.exit_code == 2 and "--format" in bad.stderr
