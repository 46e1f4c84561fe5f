"""A CPU mini image preset through the worker's own path (``worker.executor.execute_job`` in-process on SQLite, no
broker): claimed, trained, evaluated and stored, on generated files in the published formats."""

from __future__ import annotations

import json
from pathlib import Path

from image_files import SIZES

from core.config import Settings
from core.datasets import IMAGE_DATASETS
from core.spec import JobSpec
from db import jobs
from db.session import session_scope
from worker.executor import execute_job

PRESET = Path(__file__).resolve().parents[2] / "examples" / "cifar10-lipschitz-conv-mini.json"


def test_the_cifar10_lipschitz_mini_preset_runs_through_the_worker(sqlite_url, image_data_dir, tmp_path) -> None:
    settings = Settings(database_url=sqlite_url, artifacts_dir=tmp_path / "artifacts", torch_threads=1)
    data = json.loads(PRESET.read_text())
    data["dataset"]["n_train"], data["dataset"]["n_test"] = SIZES["cifar10"]  # the generated files' splits
    with session_scope(settings.database_url) as s:
        job_id = jobs.create_job(s, JobSpec.model_validate(data)).id
    assert execute_job(job_id, "w1", settings) == "succeeded"
    with session_scope(settings.database_url) as s:
        metrics = jobs.get_metrics(s, job_id)
    certified = [k for k in metrics if k.startswith("certified_l2_acc@")]
    assert len(certified) == 2 and all(0 <= metrics[k] <= metrics["clean_acc"] for k in certified)
    # 1/min std of CIFAR-10's channels, the normalisation inside the model: every other part has norm 1
    assert 0 < metrics["lipschitz_bound"] <= (1 + 1e-5) / min(IMAGE_DATASETS["cifar10"].std)
    assert (settings.artifacts_dir / job_id / "model.safetensors").exists()
