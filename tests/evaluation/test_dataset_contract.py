"""Contract tests over the dataset registry: every registered dataset loads at a small size with its declared task,
input shape and valid range, the same seed gives the same data, and the spec knows it under the same task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.datasets import IMAGE_DATASETS
from core.spec import DATASET_TASKS, DATASET_VARIANTS, DatasetSpec
from evaluation.datasets import DATASETS, load_dataset, register_dataset


def small_spec(name: str, tmp_path) -> DatasetSpec:
    """A small spec of a registered dataset; an upload gets a .npz of 12×2 inputs written in the published format."""
    fields: dict = {"name": name, "n_train": 12, "n_test": 8}
    if name == "upload":
        rng = np.random.default_rng(0)
        path = tmp_path / "data.npz"
        np.savez(path, x_train=rng.random((12, 2)), y_train=np.arange(12) % 3, x_test=rng.random((8, 2)),
                 y_test=np.arange(8) % 3, valid_range=np.array([0.0, 1.0]))  # fmt: skip
        fields["artifact"] = str(path)
    if name in ("digits_denoising", "photos_denoising"):
        fields["noise"] = 0.1
    return DatasetSpec.model_validate(fields)


def test_the_spec_and_the_registry_name_the_same_datasets_and_tasks() -> None:
    assert set(DATASET_VARIANTS) == set(DATASETS)
    assert {name: loader.task for name, loader in DATASETS.items()} == DATASET_TASKS


def test_a_dataset_registers_once_with_a_known_task() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register_dataset("digits", task="classification")(lambda spec: None)
    with pytest.raises(ValueError, match="unknown task"):
        register_dataset("new", task="ranking")


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_dataset_loads_as_declared(name: str, tmp_path, image_data_dir) -> None:
    """Image datasets read the generated files of ``image_data_dir`` (their published formats; no network)."""
    loader = DATASETS[name]
    spec = small_spec(name, tmp_path)
    data = load_dataset(spec)
    assert data.task == loader.task
    assert (len(data.x_train), len(data.x_test)) == (12, 8) and len(data.y_train) == 12 and len(data.y_test) == 8
    if loader.input_shape is not None:
        assert tuple(data.x_train.shape[1:]) == loader.input_shape == tuple(data.x_test.shape[1:])
    if loader.mean is not None:  # per-channel statistics: one per channel of (C, H, W), std > 0
        assert len(loader.mean) == len(loader.std) == loader.input_shape[0] and min(loader.std) > 0
    if name in IMAGE_DATASETS:  # the spec layer's facts and the loader say the same
        facts = IMAGE_DATASETS[name]
        assert (loader.input_shape, loader.mean, loader.std) == (facts.input_shape, facts.mean, facts.std)
        assert data.num_classes == facts.num_classes and loader.valid_range == (0.0, 1.0)
    assert data.valid_range == (loader.valid_range or data.valid_range)
    if data.valid_range is not None:
        lo, hi = data.valid_range
        for x in (data.x_train, data.x_test):
            assert float(x.min()) >= lo and float(x.max()) <= hi
    if data.task == "classification":
        assert data.y_train.dtype == torch.long and 2 <= data.num_classes == data.output_dim
        assert int(data.y_train.max()) < data.num_classes
    else:
        assert data.num_classes == 0 and data.y_train.is_floating_point()
    for x in (data.x_train, data.x_test, data.y_train.float(), data.y_test.float()):
        assert torch.isfinite(x).all()
    again = load_dataset(spec)
    for a, b in ((data.x_train, again.x_train), (data.y_test, again.y_test)):
        assert torch.equal(a, b)
