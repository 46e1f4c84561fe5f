"""Datasets, one module per source; importing this package registers them all (:mod:`evaluation.datasets.base`).

``load_dataset(spec.dataset)`` is the one public verb. A new dataset is one module here that registers its loader,
plus its import below and its name in the spec (``core.spec``).
"""

from evaluation.datasets.base import DATASETS, TASKS, Dataset, DatasetLoader, load_dataset, register_dataset
from evaluation.datasets.digits import completion_mask, digits, digits_completion, digits_denoising
from evaluation.datasets.synthetic import (
    LV_DT,
    LV_STEPS,
    lotka_volterra,
    lotka_volterra_field,
    lotka_volterra_trajectories,
    nearest_arm_labels,
    sine,
    sine_target,
    spiral_arm,
    two_spirals,
)
from evaluation.datasets.upload import read_npz, uploaded

__all__ = [
    "DATASETS",
    "LV_DT",
    "LV_STEPS",
    "TASKS",
    "Dataset",
    "DatasetLoader",
    "completion_mask",
    "digits",
    "digits_completion",
    "digits_denoising",
    "load_dataset",
    "lotka_volterra",
    "lotka_volterra_field",
    "lotka_volterra_trajectories",
    "nearest_arm_labels",
    "read_npz",
    "register_dataset",
    "sine",
    "sine_target",
    "spiral_arm",
    "two_spirals",
    "uploaded",
]
