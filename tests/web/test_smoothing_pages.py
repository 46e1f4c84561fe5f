"""Randomized smoothing's metrics reach every consumer through the metric catalog: a real job run by the worker's
code, then its job page (which says what each certificate holds for), the leaderboard (ranked by a smoothed
metric), the CSV and RobustBench exports, and the CI gate (paired per-sample outcomes)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_helpers import tiny_spec
from typer.testing import CliRunner
from web_helpers import WORKER

from cli.check.policy import metric_direction
from cli.main import app
from core.config import Settings
from core.provenance import current_code
from core.spec import JobSpec
from db import jobs
from db.migrate import upgrade
from db.session import session_scope

CERTIFIED = "smoothed_certified_l2_acc_sigma0.12@0.05"


def gate(*args) -> tuple[int, str]:
    """``robustlab check ARGS…`` in-process: (exit code, what it printed, line wrapping undone)."""
    result = CliRunner().invoke(app, ["check", *map(str, args)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, " ".join((result.stdout + result.stderr).split())


@pytest.fixture(scope="module")
def smoothing_job(tmp_path_factory) -> tuple[str, Path, str, dict]:
    """(database URL, artifacts dir, job id, metrics) of a tiny smoothing job run through the worker's code."""
    from worker.executor import execute_job

    workdir = tmp_path_factory.mktemp("smoothing-web")
    url, artifacts = f"sqlite:///{workdir / 'robustlab.db'}", workdir / "artifacts"
    upgrade(url)
    spec = tiny_spec("web-smoothing", train={"epochs": 30, "lr": 0.02, "noise_sigma": 0.12})
    spec["evaluate"] = {
        "certified": {"eps": [0.05, 0.1]},
        "smoothing": {"sigmas": [0.12, 0.25], "eps": [0.05, 0.1], "n0": 20, "n": 300, "batch": 500},
    }
    with session_scope(url) as s:
        job = jobs.create_job(s, JobSpec.model_validate(spec), code_version=current_code().identity)
    settings = Settings(database_url=url, broker_url="memory://", artifacts_dir=artifacts, progress_interval=0.5)
    assert execute_job(job.id, WORKER, settings) == "succeeded"
    with session_scope(url) as s:
        found = jobs.get_metrics(s, job.id)
    return url, artifacts, job.id, found


@pytest.fixture
def client(smoothing_job, make_web_client) -> TestClient:
    url, artifacts, _, _ = smoothing_job
    return make_web_client(url, artifacts)


def test_the_job_page_labels_the_smoothed_metrics_and_says_what_each_certificate_holds_for(client, smoothing_job):
    _, _, job_id, found = smoothing_job
    page = client.get(f"/jobs/{job_id}")
    assert page.status_code == 200, page.text[:2000]
    assert f"<code>{CERTIFIED}</code>" in page.text and "smoothed cert. L2 σ=0.12 ε=0.05" in page.text
    assert f"{100 * found[CERTIFIED]:.1f} %" in page.text
    notes = page.text.split('id="metric-notes"', 1)[1].split("</dl>", 1)[0]
    assert "network itself, deterministically" in notes and "smoothed classifier" in notes and "1 − α" in notes
    assert "plot_eps.png" in page.text


def test_the_leaderboard_ranks_and_exports_by_a_smoothed_metric(client, smoothing_job):
    _, _, job_id, found = smoothing_job
    r = client.get("/api/v1/leaderboard", params={"metric": "smoothed_certified_l2_acc_sigma0.12", "eps": 0.05})
    assert r.status_code == 200, r.text
    (entry,) = r.json()["entries"]
    assert r.json()["metric"] == CERTIFIED and entry["value"] == pytest.approx(found[CERTIFIED])
    assert client.get("/", params={"metric": CERTIFIED}).status_code == 200
    rows = list(csv.DictReader(io.StringIO(client.get("/api/v1/leaderboard", params={"format": "csv"}).text)))
    assert float(rows[0][CERTIFIED]) == pytest.approx(found[CERTIFIED])
    (model,) = client.get("/api/v1/leaderboard", params={"format": "robustbench", "metric": CERTIFIED}).json()
    assert model["threat_model"] == "L2" and model["eps"] == "0.05"
    assert model["smoothed_certified_acc"] == {
        "0.12": f"{100 * found[CERTIFIED]:.2f}",
        "0.25": f"{100 * found['smoothed_certified_l2_acc_sigma0.25@0.05']:.2f}",
    }
    assert model["certified_acc"] == f"{100 * found['certified_l2_acc@0.05']:.2f}"
    assert "smoothed classifier, not the network" in model["footnote"] and "network itself" in model["footnote"]


def test_the_gate_pairs_smoothed_outcomes_and_reads_their_direction(smoothing_job, tmp_path: Path):
    _, artifacts, job_id, found = smoothing_job
    result = artifacts / job_id / "result.json"
    assert metric_direction("smoothed_abstain_rate@0.12") == "lower"
    code, report = gate("--candidate", result, "--baseline", result, "--max-drop", "smoothed_*=0.01")
    assert code == 0 and CERTIFIED in report and "McNemar" in report, report
    worse = json.loads(result.read_text())
    worse["metrics"][CERTIFIED] = found[CERTIFIED] - 0.2
    del worse["info"]
    candidate = tmp_path / "worse.json"
    candidate.write_text(json.dumps(worse))
    code, report = gate("--candidate", candidate, "--baseline", result, "--max-drop", f"{CERTIFIED}=0.01")
    assert code == 1, report
