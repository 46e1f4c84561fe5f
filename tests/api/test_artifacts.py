"""Uploads on PostgreSQL: checkpoints (safetensors checked tensor by tensor against the model spec), datasets
(npz checked without pickle), size limits, downloads, and jobs that use them — run by the real worker code
in-process (``worker.executor.execute_job``) — plus the job files endpoint and its path checks."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from pydantic import ValidationError
from safetensors.torch import save
from service_helpers import tiny_spec

import models
from core.config import Settings
from core.spec import DatasetSpec, ModelSpec
from worker.executor import execute_job

pytestmark = pytest.mark.services

MODEL = {"family": "explicit", "width": 8, "depth": 4, "h": 0.2}
QUICK_EVAL = {"gaussian": {"sigmas": [0.1], "repeats": 1}, "pgd": {"norm": "Linf", "eps": [0.05], "steps": 3}}


def weights(model: dict | None = None, input_dim: int = 2, output_dim: int = 2, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    spec = ModelSpec.model_validate({**(model or MODEL), "input_dim": input_dim, "output_dim": output_dim})
    return {k: v.detach().clone() for k, v in models.build_model(spec).state_dict().items()}


def upload_checkpoint(client: TestClient, tensors: dict, name: str = "w.safetensors", **fields) -> object:
    files = {"file": (name, save(tensors), "application/octet-stream")}
    data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
    return client.post("/api/v1/artifacts/checkpoints", files=files, data=data)


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def toy_arrays(n_train: int = 60, n_test: int = 40, classes: int = 3, features: int = 5) -> dict:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(classes, features)) * 3
    y_train, y_test = rng.integers(0, classes, n_train), rng.integers(0, classes, n_test)
    x_train = centers[y_train] + rng.normal(size=(n_train, features))
    x_test = centers[y_test] + rng.normal(size=(n_test, features))
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def upload_dataset(client: TestClient, content: bytes, name: str = "data.npz"):
    return client.post("/api/v1/artifacts/datasets", files={"file": (name, content, "application/octet-stream")})


# ---------------------------------------------------------------------------------------------------- checkpoints
def test_uploaded_checkpoint_is_evaluated_by_a_job(pg_client: TestClient, pg_settings: Settings) -> None:
    tensors = weights()
    r = upload_checkpoint(pg_client, tensors, model={**MODEL, "input_dim": 2, "output_dim": 2})
    assert r.status_code == 201, r.text
    artifact = r.json()
    assert artifact["kind"] == "checkpoint" and artifact["ref"] == f"artifact:{artifact['id']}"
    assert artifact["meta"]["tensors"] == len(tensors) and artifact["filename"] == "w.safetensors"

    stored = pg_client.get(f"/api/v1/artifacts/{artifact['id']}")
    assert stored.status_code == 200 and stored.headers["content-type"] == "application/octet-stream"
    info = pg_client.get(f"/api/v1/artifacts/{artifact['id']}/info").json()
    assert info["sha256"] == artifact["sha256"] and info["size_bytes"] == artifact["size_bytes"]

    spec = tiny_spec("from-checkpoint", model=MODEL, evaluate=QUICK_EVAL, checkpoint=artifact["ref"])
    job = pg_client.post("/api/v1/jobs", json=spec)
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    assert execute_job(job_id, worker="test", settings=pg_settings) == "succeeded"
    results = pg_client.get(f"/api/v1/jobs/{job_id}/results").json()
    assert "train_seconds" not in results["metrics"] and "clean_acc" in results["metrics"]  # loaded, not trained
    assert results["info"]["spec_hash"] == job.json()["spec_hash"]

    listing = pg_client.get(f"/api/v1/jobs/{job_id}/artifacts").json()
    assert {"model.safetensors", "result.json", "spec.json"} <= {f["path"] for f in listing["files"]}
    download = pg_client.get(f"/api/v1/jobs/{job_id}/artifacts/model.safetensors")
    assert download.status_code == 200
    path = pg_settings.artifacts_dir / "downloaded.safetensors"
    path.write_bytes(download.content)
    loaded = models.load(path).state_dict()
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)  # the job evaluated exactly the upload


def test_dims_come_from_a_dataset_or_the_file(pg_client: TestClient, tmp_path: Path) -> None:
    tensors = weights(input_dim=64, output_dim=10)
    r = upload_checkpoint(pg_client, tensors, model=MODEL, dataset="digits")
    assert r.status_code == 201, r.text
    assert (r.json()["meta"]["model_spec"]["input_dim"], r.json()["meta"]["model_spec"]["output_dim"]) == (64, 10)
    spec = tiny_spec(model=MODEL, dataset={"name": "digits", "n_train": 50, "n_test": 50})
    assert upload_checkpoint(pg_client, tensors, spec=spec).status_code == 201

    # a file written by `robustlab run` / models.save carries its model spec: no form field needed
    spec_model = ModelSpec.model_validate({**MODEL, "input_dim": 2, "output_dim": 2})
    saved = models.save(models.build_model(spec_model), spec_model, tmp_path / "run.safetensors")
    files = {"file": ("run.safetensors", saved.read_bytes(), "application/octet-stream")}
    r = pg_client.post("/api/v1/artifacts/checkpoints", files=files)
    assert r.status_code == 201, r.text

    r = upload_checkpoint(pg_client, weights(), model=MODEL)
    assert r.status_code == 422 and "input_dim" in r.text and "dataset" in r.text
    r = upload_checkpoint(pg_client, weights(), model={**MODEL, "input_dim": 3}, dataset="spirals")
    assert r.status_code == 422 and "input_dim = 3" in r.text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda t: t.update({"embed.weight": torch.zeros(8, 3)}),
            "'embed.weight' has shape [8, 3]; the model needs [8, 2]",
        ),
        (lambda t: t.pop("head.bias"), "'head.bias' is missing"),
        (lambda t: t.update({"extra.weight": torch.zeros(2)}), "'extra.weight' is not a tensor of this model"),
        (lambda t: t.update({"embed.bias": torch.zeros(8, dtype=torch.int64)}), "'embed.bias' has dtype I64"),
        (lambda t: t["embed.bias"].fill_(float("nan")), "'embed.bias' has non-finite values"),
    ],
    ids=["shape", "missing", "unexpected", "dtype", "nan"],
)
def test_checkpoint_mismatch_is_422_naming_the_tensor(pg_client: TestClient, change, message: str) -> None:
    tensors = weights()
    assert "head.bias" in tensors and "embed.weight" in tensors
    change(tensors)
    r = upload_checkpoint(pg_client, tensors, model=MODEL, dataset="spirals")
    assert r.status_code == 422 and message in r.json()["detail"], r.text
    assert pg_client.get("/api/v1/jobs").json()["total"] == 0


def test_checkpoint_must_be_safetensors_not_pickle(pg_client: TestClient, pg_settings: Settings) -> None:
    buffer = io.BytesIO()
    torch.save(weights(), buffer)  # a pickle: never loaded
    files = {"file": ("w.safetensors", buffer.getvalue(), "application/octet-stream")}
    r = pg_client.post("/api/v1/artifacts/checkpoints", files=files, data={"model": json.dumps(MODEL)})
    assert r.status_code == 422 and "not a valid safetensors file" in r.json()["detail"]
    r = upload_checkpoint(pg_client, weights(), name="w.pt", model=MODEL, dataset="spirals")
    assert r.status_code == 422 and ".safetensors" in r.json()["detail"]
    assert pg_client.post("/api/v1/artifacts/checkpoints", data={"model": json.dumps(MODEL)}).status_code == 422
    r = upload_checkpoint(pg_client, weights(), model={**MODEL, "colour": "red"}, dataset="spirals")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "model", "colour"]
    uploads = pg_settings.artifacts_dir / "uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == []  # nothing kept of rejected uploads


def test_upload_size_limit_413(make_pg_client) -> None:
    client = make_pg_client(max_upload_bytes=4096)
    big = {"embed.weight": torch.zeros(8, 2), "pad": torch.zeros(2000)}  # ~8 KB: over the limit
    r = upload_checkpoint(client, big, model=MODEL, dataset="spirals")
    assert r.status_code == 413 and "4096" in r.json()["detail"]
    huge = b"\0" * (1024 * 1024 + 8192)  # over limit + multipart allowance: refused from Content-Length
    assert upload_dataset(client, huge).status_code == 413

    def chunks():  # no Content-Length: the middleware counts and stops reading
        for _ in range(300):
            yield b"\0" * 8192

    r = client.post(
        "/api/v1/artifacts/datasets", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=x"}
    )
    assert r.status_code == 413


def test_unknown_artifact_in_a_spec_is_422(pg_client: TestClient, make_pg_client) -> None:
    missing = "artifact:00000000-0000-4000-8000-000000000000"
    r = pg_client.post("/api/v1/jobs", json=tiny_spec(checkpoint=missing))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "checkpoint"]
    dataset = upload_dataset(pg_client, npz_bytes(**toy_arrays())).json()["ref"]
    r = pg_client.post("/api/v1/jobs", json=tiny_spec(checkpoint=dataset))  # a dataset is not a checkpoint
    assert r.status_code == 422
    r = pg_client.post("/api/v1/jobs", json=tiny_spec(dataset={"name": "upload", "artifact": "artifact:../../x"}))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "dataset", "artifact"]
    # with API keys a spec cannot point the worker at a path of its machine
    keyed = make_pg_client(auth="keys")
    from api.security import create_api_key
    from db.session import session_scope

    with session_scope(keyed.app.state.settings.database_url) as s:
        token = create_api_key(s, "w", "write")[1]
    r = keyed.post("/api/v1/jobs", json=tiny_spec(checkpoint="/etc"), headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 422 and "artifact:<id>" in r.text


def test_checkpoint_for_another_model_is_422_at_submission(pg_client: TestClient) -> None:
    ref = upload_checkpoint(pg_client, weights(), model=MODEL, dataset="spirals").json()["ref"]
    r = pg_client.post("/api/v1/jobs", json=tiny_spec(model={**MODEL, "depth": 5}, checkpoint=ref))
    assert r.status_code == 422 and "depth" in r.json()["detail"][0]["msg"]


# ---------------------------------------------------------------------------------------------------- datasets
def test_uploaded_dataset_trains_a_job(pg_client: TestClient, pg_settings: Settings) -> None:
    r = upload_dataset(pg_client, npz_bytes(**toy_arrays()))
    assert r.status_code == 201, r.text
    meta = r.json()["meta"]
    assert (meta["n_train"], meta["n_test"], meta["input_dim"], meta["num_classes"]) == (60, 40, 5, 3)
    spec = tiny_spec("on-upload", dataset={"name": "upload", "artifact": r.json()["ref"]}, evaluate=QUICK_EVAL)
    spec["train"] = {"epochs": 20, "lr": 0.05}
    job = pg_client.post("/api/v1/jobs", json=spec)
    assert job.status_code == 201, job.text
    assert (job.json()["spec"]["dataset"]["n_train"], job.json()["spec"]["dataset"]["n_test"]) == (60, 40)
    assert execute_job(job.json()["id"], worker="test", settings=pg_settings) == "succeeded"
    metrics = pg_client.get(f"/api/v1/jobs/{job.json()['id']}/results").json()["metrics"]
    assert metrics["clean_acc"] > 0.6  # three well-separated blobs

    spec["dataset"]["n_train"] = 61
    r = pg_client.post("/api/v1/jobs", json=spec)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "dataset", "n_train"]


def _pickled_object_array() -> bytes:
    arrays = toy_arrays()
    arrays["y_train"] = np.array([{"a": 1}] * 60, dtype=object)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # numpy pickles object arrays
    return buffer.getvalue()


def test_uploaded_images_train_a_job_with_augmentation(pg_client: TestClient, pg_settings: Settings) -> None:
    """(N, C, H, W) uploads keep their shape through the worker: the images are cropped and flipped in training."""
    arrays = toy_arrays(features=16)
    for split in ("x_train", "x_test"):
        arrays[split] = arrays[split].reshape(-1, 1, 4, 4)
    r = upload_dataset(pg_client, npz_bytes(**arrays))
    assert r.status_code == 201, r.text
    assert (r.json()["meta"]["input_shape"], r.json()["meta"]["input_dim"]) == ([1, 4, 4], 16)
    spec = tiny_spec("on-images", dataset={"name": "upload", "artifact": r.json()["ref"]}, evaluate=QUICK_EVAL)
    spec["train"] = {"epochs": 5, "lr": 0.05, "augment": {"crop_padding": 1, "flip": True}}
    job = pg_client.post("/api/v1/jobs", json=spec)
    assert job.status_code == 201, job.text
    assert execute_job(job.json()["id"], worker="test", settings=pg_settings) == "succeeded"
    flat = upload_dataset(pg_client, npz_bytes(**toy_arrays())).json()["ref"]
    spec = dict(spec, name="on-flat", dataset={"name": "upload", "artifact": flat})
    job = pg_client.post("/api/v1/jobs", json=spec).json()
    assert execute_job(job["id"], worker="test", settings=pg_settings) == "failed"
    error = pg_client.get(f"/api/v1/jobs/{job['id']}").json()["error"]
    assert "train.augment needs images (N, C, H, W)" in error


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (dict(toy_arrays(), x_train=np.full((60, 5), np.nan)), "x_train has non-finite values"),
        (dict(toy_arrays(), y_test=-np.ones(40, dtype=np.int64)), "y_test has a negative label"),
        (dict(toy_arrays(), y_train=np.zeros(60)), "y_train must be a 1-D integer array"),
        (dict(toy_arrays(), y_train=np.zeros(59, dtype=np.int64)), "y_train has 59 labels for 60 rows"),
        (dict(toy_arrays(), x_test=np.zeros((40, 4))), "x_train has 5 features but x_test has 4"),
        (
            dict(toy_arrays(), x_train=np.zeros((60, 1, 2, 2))),
            "x_train's samples have shape (1, 2, 2) but x_test's (5,)",
        ),
        ({k: v for k, v in toy_arrays().items() if k != "y_test"}, "missing array(s) ['y_test']"),
        (dict(toy_arrays(), extra=np.zeros(3)), "unknown array(s) ['extra']"),
        (dict(toy_arrays(), y_train=np.zeros(60, dtype=np.int64)), "single class"),
    ],
    ids=[
        "nan",
        "negative-label",
        "float-labels",
        "lengths",
        "features",
        "image-shape",
        "missing",
        "unknown",
        "one-class",
    ],
)
def test_invalid_dataset_is_422(pg_client: TestClient, arrays: dict, message: str) -> None:
    r = upload_dataset(pg_client, npz_bytes(**arrays))
    assert r.status_code == 422 and message in r.json()["detail"], r.text


def test_dataset_is_read_without_pickle(pg_client: TestClient) -> None:
    r = upload_dataset(pg_client, _pickled_object_array())
    assert r.status_code == 422 and "without pickle" in r.json()["detail"]
    assert upload_dataset(pg_client, b"PK\x03\x04 not a zip").status_code == 422
    assert upload_dataset(pg_client, npz_bytes(**toy_arrays()), name="data.csv").status_code == 422


def test_dataset_spec_artifact_iff_upload() -> None:
    with pytest.raises(ValidationError, match="dataset.artifact is required"):
        DatasetSpec(name="upload")
    with pytest.raises(ValidationError, match="applies to dataset 'upload' only"):
        DatasetSpec(name="spirals", artifact="artifact:x")
    assert DatasetSpec(name="upload", artifact="data.npz").artifact == "data.npz"


# ---------------------------------------------------------------------------------------------------- job files
def test_job_files_cannot_leave_the_job_directory(pg_client: TestClient, pg_settings: Settings, finish) -> None:
    job_id = finish(tiny_spec(), {"clean_acc": 0.5})
    job_dir = pg_settings.artifacts_dir / job_id
    (job_dir / "plots").mkdir(parents=True)
    (job_dir / "model.safetensors").write_bytes(b"weights")
    (job_dir / "plots" / "curve.png").write_bytes(b"png")
    (job_dir / ".partial-model.safetensors").write_bytes(b"half")
    secret = pg_settings.artifacts_dir / "secret.txt"
    secret.write_text("top secret")
    os.symlink(secret, job_dir / "link.txt")

    files = pg_client.get(f"/api/v1/jobs/{job_id}/artifacts").json()["files"]
    assert [f["path"] for f in files] == ["model.safetensors", "plots/curve.png"]
    assert pg_client.get(f"/api/v1/jobs/{job_id}/artifacts/plots/curve.png").content == b"png"
    attempts = ("link.txt", ".partial-model.safetensors", "..%2Fsecret.txt", "%2E%2E/secret.txt", "%2Fetc%2Fpasswd",
                "plots/..%2F..%2Fsecret.txt", "nope")  # fmt: skip
    for path in attempts:
        r = pg_client.get(f"/api/v1/jobs/{job_id}/artifacts/{path}")
        assert r.status_code == 404 and b"top secret" not in r.content, path
    assert pg_client.get("/api/v1/jobs/nope/artifacts/model.safetensors").status_code == 404
    assert pg_client.get("/api/v1/artifacts/not-an-id").status_code == 404
