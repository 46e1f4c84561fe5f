"""Datasets, one module per source; importing this package registers them all (:mod:`evaluation.datasets.base`).

``load_dataset(spec.dataset)`` is the one public verb. A new dataset is one module here that registers its loader,
plus its import below and its name in the spec (``core.spec``). The published image datasets (MNIST,
Fashion-MNIST, CIFAR-10/100) read their files from ``ROBUSTLAB_DATA_DIR`` (:mod:`evaluation.datasets.files`) in
their published formats (:mod:`evaluation.datasets.formats`).
"""

from evaluation.datasets.base import DATASETS, TASKS, Dataset, DatasetLoader, load_dataset, register_dataset
from evaluation.datasets.cifar10 import load_cifar10
from evaluation.datasets.cifar100 import load_cifar100
from evaluation.datasets.digits import completion_mask, digits, digits_completion, digits_denoising
from evaluation.datasets.fashion_mnist import load_fashion_mnist
from evaluation.datasets.files import SOURCES, DatasetFileError, fetch
from evaluation.datasets.mnist import load_mnist
from evaluation.datasets.photos import photo, photos_denoising, random_patches
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
    "SOURCES",
    "LV_DT",
    "LV_STEPS",
    "TASKS",
    "Dataset",
    "DatasetFileError",
    "DatasetLoader",
    "completion_mask",
    "digits",
    "digits_completion",
    "digits_denoising",
    "fetch",
    "load_cifar10",
    "load_cifar100",
    "load_fashion_mnist",
    "load_dataset",
    "lotka_volterra",
    "lotka_volterra_field",
    "lotka_volterra_trajectories",
    "load_mnist",
    "nearest_arm_labels",
    "photo",
    "photos_denoising",
    "random_patches",
    "read_npz",
    "register_dataset",
    "sine",
    "sine_target",
    "spiral_arm",
    "two_spirals",
    "uploaded",
]
