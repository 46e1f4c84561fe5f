"""Running out of device memory (issue 14): the job fails at once with a message naming the batch size that failed
(training or evaluation), is never run again, and ``result.json`` records the device it ran on.

There is no GPU here: the model raises ``torch.OutOfMemoryError`` (what CUDA's allocator raises) from its forward
pass when a batch is larger than a limit, in-process through :func:`worker.executor.execute_job`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from service_helpers import tiny_spec

import evaluation.runner as runner
from core.config import Settings
from core.spec import JobSpec
from core.spec.evaluate import EVAL_BATCH
from db import jobs
from db.session import session_scope
from worker.executor import execute_job


@pytest.fixture
def settings(sqlite_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=sqlite_url, artifacts_dir=tmp_path / "artifacts", torch_threads=1, lease_seconds=5)


def submit(settings: Settings, spec: dict) -> str:
    with session_scope(settings.database_url) as s:
        return jobs.create_job(s, JobSpec.model_validate(spec)).id


def memory_limited(monkeypatch: pytest.MonkeyPatch, phase: str, max_batch: int) -> None:
    """The runner's models raise CUDA's out-of-memory error on a forward pass of more than ``max_batch`` inputs
    while ``phase`` ("train": the model in training mode; "evaluate": in eval mode)."""
    build = runner.prepare_model

    def prepare(spec, data, device):
        spec, model = build(spec, data, device)

        def allocate(module, inputs):
            if module.training == (phase == "train") and inputs[0].shape[0] > max_batch:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 1.00 GiB free)")

        model.register_forward_pre_hook(allocate)
        return spec, model

    monkeypatch.setattr(runner, "prepare_model", prepare)


@pytest.mark.parametrize(
    ("phase", "overrides", "expected"),
    [
        ("train", {"train": {"epochs": 3, "lr": 0.02, "batch_size": 64}},
         "CUDA out of memory while training at batch size 64 (train.batch_size; the failing forward pass had 64 "
         "inputs); lower train.batch_size and submit again. CUDA out of memory. Tried to allocate 2.00 GiB"),
        ("train", {"train": {"epochs": 3, "lr": 0.02}},  # no batch size: the whole training set, 100 samples
         "CUDA out of memory while training at batch size 100 (train.batch_size; the failing forward pass had 100 "
         "inputs)"),
        ("evaluate", {"evaluate": {"gaussian": {"sigmas": [0.0], "repeats": 1}, "batch_size": 50}},
         "CUDA out of memory while evaluating at batch size 50 (evaluate.batch_size; the failing forward pass had 50"),
        ("evaluate", {"evaluate": {"certified": {"eps": [0.05]}}},  # 100 test samples: one batch of 100
         f"CUDA out of memory while evaluating at batch size {EVAL_BATCH} (evaluate.batch_size; the failing "
         "forward pass had 100 inputs)"),
    ],
    ids=["train-batch", "train-full-batch", "evaluate-batch", "evaluate-default"],
)  # fmt: skip
def test_out_of_memory_fails_the_job_once_naming_the_batch_size(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, phase: str, overrides: dict, expected: str
) -> None:
    memory_limited(monkeypatch, phase, max_batch=45)  # the training set (40) fits in eval mode: train_acc passes
    dataset = {"name": "spirals", "n_train": 40 if phase == "evaluate" else 100, "n_test": 100}
    job_id = submit(settings, tiny_spec(f"oom-{phase}", dataset=dataset, **overrides))
    assert execute_job(job_id, "w1", settings) == "failed"
    assert execute_job(job_id, "w2", settings) == "dropped"  # a redelivery does not run it again
    with session_scope(settings.database_url) as s:
        job = jobs.get_job(s, job_id)
        assert job.status == "failed" and job.attempts == 1 and jobs.get_metrics(s, job_id) == {}
    assert job.error.startswith("OutOfMemory: " + expected), job.error


def test_a_job_records_its_device_and_keeps_its_final_checkpoint(settings: Settings) -> None:
    job_id = submit(settings, tiny_spec("fits", train={"epochs": 3, "lr": 0.02, "batch_size": 32}))
    assert execute_job(job_id, "w1", settings) == "succeeded"
    info = json.loads((settings.artifacts_dir / job_id / "result.json").read_text())["info"]
    hardware = info["hardware"]
    assert hardware["device"] == "cpu" and hardware["torch"] == torch.__version__
    assert hardware["cuda"] == torch.version.cuda and "gpu_name" not in hardware  # CPU: no GPU facts
    with session_scope(settings.database_url) as s:
        assert jobs.get_job(s, job_id).info["hardware"] == hardware
    # the worker kept the final training checkpoint only (3 epochs: one every epoch)
    assert info["checkpoints"]["kept"] == ["epoch-000003.pt"]
    assert [p.name for p in (settings.artifacts_dir / job_id / "checkpoints").iterdir()] == ["epoch-000003.pt"]
