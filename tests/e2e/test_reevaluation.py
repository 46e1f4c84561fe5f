"""Re-evaluation end to end on PostgreSQL + Redis: the real API and worker processes evaluate a stored job's weights
and give the numbers ``robustlab run`` gives for the same checkpoint; ``robustlab reevaluate --stale`` refreshes what
an older protocol evaluated, once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from service_helpers import REPO, Stack, tiny_spec
from sqlalchemy import update

from core.metrics import is_timing
from core.protocol import parse_protocol_version, protocol_version
from core.spec import JobSpec
from db import jobs as job_store
from db import lifecycle
from db.models import Job
from db.session import session_scope

pytestmark = [pytest.mark.services, pytest.mark.e2e]


def robustlab(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "cli.main", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def evaluation_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The evaluated numbers: timings and training summaries left out."""
    return {k: v for k, v in metrics.items() if not is_timing(k) and not k.startswith("train_")}


def test_reevaluation_gives_the_numbers_of_robustlab_run_on_the_checkpoint(pg_stack: Stack, tmp_path: Path) -> None:
    old = pg_stack.submit(tiny_spec("e2e-reeval"))
    old = pg_stack.wait(old["id"], timeout=180)
    assert old["status"] == "succeeded" and old["weights_kept"], old
    with pg_stack.client() as c:
        r = c.post(f"/api/v1/jobs/{old['id']}/reevaluate")
        assert r.status_code == 201, r.text
        new = pg_stack.wait(r.json()["id"], timeout=180)
        assert new["status"] == "succeeded", new.get("error")
        reevaluated = c.get(f"/api/v1/jobs/{new['id']}/results").json()["metrics"]
        original = c.get(f"/api/v1/jobs/{old['id']}/results").json()["metrics"]
    assert new["reevaluation_of"] == old["id"] and new["spec"]["checkpoint"] == f"job:{old['id']}"

    # the same weights evaluated in-process by `robustlab run`, from the job's artifacts directory
    spec = {**old["spec"], "checkpoint": str(pg_stack.artifacts_dir / old["id"])}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    proc = robustlab("run", str(tmp_path / "spec.json"), "--out", str(tmp_path / "out"), env=pg_stack.env)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    local = json.loads((tmp_path / "out" / "result.json").read_text())["metrics"]

    assert "train_loss" not in reevaluated and "clean_acc" in reevaluated
    assert evaluation_metrics(reevaluated) == evaluation_metrics(local)
    assert evaluation_metrics(reevaluated) == evaluation_metrics(original)  # the protocol did not change


def test_reevaluate_stale_refreshes_each_chain_once(pg_stack: Stack) -> None:
    old = pg_stack.wait(pg_stack.submit(tiny_spec("e2e-stale"))["id"], timeout=180)
    with pg_stack.client() as c:
        first = pg_stack.wait(c.post(f"/api/v1/jobs/{old['id']}/reevaluate").json()["id"], timeout=180)
    assert first["status"] == "succeeded"
    # as if both had been evaluated under an older protocol (the Gaussian evaluation one revision back)
    revisions = parse_protocol_version(first["protocol_version"])
    older = protocol_version({**revisions, "gaussian": revisions["gaussian"] - 1})
    with session_scope(pg_stack.database_url) as s:
        s.execute(update(Job).where(Job.id.in_([old["id"], first["id"]])).values(protocol_version=older))
        s.commit()
        # and an entry stored without weights under that protocol (as an import or `db seed` stores one)
        bare = job_store.create_job(s, JobSpec.model_validate(tiny_spec("e2e-no-weights")), "imported", older)
        lifecycle.claim_job(s, bare.id, "importer", 60)
        assert lifecycle.complete_job(s, bare.id, {"clean_acc": 0.5}, {}, "importer") is not None
    with pg_stack.client() as c:
        stale_ids = [j["id"] for j in c.get("/api/v1/jobs", params={"stale": "true", "limit": 500}).json()["items"]]
    assert first["id"] in stale_ids and old["id"] not in stale_ids  # the chain's newest link only

    proc = robustlab("reevaluate", "--stale", "--wait", "--poll", "0.2", env=pg_stack.env)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert f"{first['id']} (e2e-stale): queued" in proc.stdout and f"{old['id']} " not in proc.stdout
    assert f"{bare.id} (e2e-no-weights): skipped" in proc.stdout and "kept no weights" in proc.stdout
    with pg_stack.client() as c:
        jobs = c.get("/api/v1/jobs", params={"limit": 500}).json()["items"]
    second = [j for j in jobs if j["reevaluation_of"] == first["id"]]
    assert len(second) == 1 and second[0]["status"] == "succeeded" and not second[0]["stale"]

    again = robustlab("reevaluate", "--stale", env=pg_stack.env)  # nothing left to refresh in this chain
    assert again.returncode == 0 and first["id"] not in again.stdout, again.stdout
    assert "0 queued, 0 already re-evaluated, 1 not re-evaluable" in again.stdout  # the bare entry, again
    direct = robustlab("reevaluate", bare.id, env=pg_stack.env)
    assert direct.returncode == 2 and "HTTP 409" in direct.stderr and "kept no weights" in direct.stderr

    unknown = robustlab("reevaluate", "00000000-0000-4000-8000-000000000000", env=pg_stack.env)
    assert unknown.returncode == 2 and "HTTP 404" in unknown.stderr
    neither = robustlab("reevaluate", env=pg_stack.env)
    assert neither.returncode == 2 and "give job ids or --stale" in neither.stderr
