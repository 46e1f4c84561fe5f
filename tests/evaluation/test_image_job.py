"""A tiny MNIST job end to end in-process (``evaluation.runner.run_job``), from IDX files written in the published
format: the dense ``explicit`` family flattens the (1, 28, 28) images, trains on them with augmentation, and every
evaluation runs in [0, 1] pixel space. And the spec's image-dataset rules: ε in [0, 1], ``n_train`` within the
published split."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from core.datasets import IMAGE_DATASETS
from core.metrics import metric_key
from core.spec import JobSpec
from evaluation.runner import run_job

EPS = 8 / 255  # RobustBench's L∞ ε, in pixel units
L2_EPS = 36 / 255  # the 1-Lipschitz literature's certified L2 radius


def mnist_job(**train) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "mnist-tiny",
            "dataset": {"name": "mnist", "n_train": 64, "n_test": 32, "seed": 0},
            "model": {"family": "explicit", "width": 16, "depth": 2, "h": 0.5, "activation": "tanh"},
            "train": {"epochs": 12, "lr": 0.01, "batch_size": 16, "seed": 0, **train},
            "evaluate": {
                "gaussian": {"sigmas": [0.0, 0.1], "repeats": 2},
                "pgd": {"norm": ["Linf", "L2"], "eps": [EPS, L2_EPS, 0.5], "steps": 5},
                "certified": {"eps": [L2_EPS]},
            },
            "device": "cpu",
        }
    )


def test_a_tiny_mnist_job_trains_and_evaluates_on_images(image_data_dir, tmp_path) -> None:
    spec = mnist_job(augment={"crop_padding": 1})
    result = run_job(spec, out_dir=tmp_path / "run")
    m = result.metrics
    # the generated classes are bright squares at ten places: learnable only if images and labels were paired right
    assert m["clean_acc"] >= 0.8, m
    assert m[metric_key("pgd_linf_acc", EPS)] <= m["clean_acc"]
    assert m[metric_key("certified_l2_acc", L2_EPS)] <= m[metric_key("pgd_l2_acc", L2_EPS)] <= m["clean_acc"]
    assert 0.0 <= m["gaussian_acc@0.1"] <= 1.0 and m["lipschitz_bound"] > 0
    stored = json.loads((tmp_path / "run" / "result.json").read_text())
    assert stored["spec"]["model"]["input_dim"] == IMAGE_DATASETS["mnist"].input_dim == 784
    assert stored["spec"]["train"]["augment"] == {"crop_padding": 1, "flip": False}
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(result.model(x), result.model(x.flatten(1)))  # the dense family flattens images itself
    again = run_job(spec)
    assert again.metrics["clean_acc"] == m["clean_acc"] and again.metrics["train_loss"] == m["train_loss"]


def test_image_datasets_take_eps_in_pixel_units_and_at_most_their_split() -> None:
    base = mnist_job().model_dump(mode="json")
    for section in ("pgd", "certified"):
        bad = json.loads(json.dumps(base))
        bad["evaluate"][section]["eps"] = [0.5, 2.0]
        with pytest.raises(ValidationError, match=rf"evaluate.{section}.eps: ε = 2 is outside \[0, 1\]"):
            JobSpec.model_validate(bad)
    bad = json.loads(json.dumps(base))
    bad["evaluate"]["autoattack"] = {"norm": "L2", "eps": [1.5]}
    with pytest.raises(ValidationError, match=r"evaluate.autoattack.eps: ε = 1.5 is outside \[0, 1\]"):
        JobSpec.model_validate(bad)
    for name, facts in IMAGE_DATASETS.items():
        dataset = {"name": name, "n_train": facts.n_train, "n_test": facts.n_test}
        assert JobSpec.model_validate({**base, "dataset": dataset}).dataset.n_train == facts.n_train
        for split in ("n_train", "n_test"):
            over = {**dataset, split: getattr(facts, split) + 1}
            with pytest.raises(ValidationError, match=rf"dataset.{split}: {name} has {getattr(facts, split)} "):
                JobSpec.model_validate({**base, "dataset": over})
    digits = {**base, "dataset": {"name": "digits"}, "evaluate": {"pgd": {"eps": [2.0]}}}
    assert JobSpec.model_validate(digits).evaluate.pgd.eps == [2.0]  # flat datasets keep their own scale


def test_an_image_dataset_s_sizes_need_no_files(tmp_path, monkeypatch) -> None:
    """The API sizes a checkpoint for a named image dataset from its facts: no file, no download."""
    from core.config import get_settings
    from core.spec import DatasetSpec
    from worker.uploads import dataset_dims

    monkeypatch.setenv("ROBUSTLAB_DATA_DIR", str(tmp_path / "nothing"))
    get_settings.cache_clear()
    try:
        assert dataset_dims(DatasetSpec(name="cifar10")) == (3072, 10)
        assert dataset_dims(DatasetSpec(name="cifar100")) == (3072, 100)
        assert not (tmp_path / "nothing").exists()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
