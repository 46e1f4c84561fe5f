"""The image datasets' facts that every layer shares, torch-free: shape, classes, the published split sizes and the
per-channel statistics of the training split; and the photographs whose patches make ``photos_denoising``.

::

    from core.datasets import IMAGE_DATASETS
    IMAGE_DATASETS["cifar10"].input_shape      # (3, 32, 32)
    IMAGE_DATASETS["cifar10"].mean             # (0.4914, 0.4822, 0.4465): per channel, pixels in [0, 1]

Inputs stay in [0, 1] pixel space (every threat model is measured there, as RobustBench does); a model that wants
standardised inputs puts ``(x − mean) / std`` inside itself. The spec reads the split sizes (``n_train`` above them
is a 422) and the job-cost estimate the input size; ``evaluation.datasets`` loads the files (its loaders declare the
same shape and statistics: a contract test holds the two to each other).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ImageDataset:
    """One published image classification dataset.

    Attributes:
        name: the spec's ``dataset.name``.
        input_shape: one image, (channels, height, width).
        num_classes: classes of the labels used (CIFAR-100: the 100 fine classes).
        n_train / n_test: sizes of the published training and test splits.
        mean / std: per-channel mean and standard deviation of the training split's pixels scaled to [0, 1] (the
            standard figures quoted with the dataset, as torchvision's examples and RobustBench's models use them).
        source: who published it, and where.
    """

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    n_train: int
    n_test: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    @property
    def input_dim(self) -> int:
        return math.prod(self.input_shape)


IMAGE_DATASETS: dict[str, ImageDataset] = {
    d.name: d
    for d in (
        ImageDataset(
            "mnist", (1, 28, 28), 10, 60_000, 10_000, (0.1307,), (0.3081,),
            "LeCun, Cortes & Burges, The MNIST database of handwritten digits",
        ),
        ImageDataset(
            "fashion_mnist", (1, 28, 28), 10, 60_000, 10_000, (0.2860,), (0.3530,),
            "Xiao, Rasul & Vollgraf, Fashion-MNIST (2017)",
        ),
        ImageDataset(
            "cifar10", (3, 32, 32), 10, 50_000, 10_000, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
            "Krizhevsky, Learning Multiple Layers of Features from Tiny Images (2009): CIFAR-10",
        ),
        ImageDataset(
            "cifar100", (3, 32, 32), 100, 50_000, 10_000, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
            "Krizhevsky, Learning Multiple Layers of Features from Tiny Images (2009): CIFAR-100, fine labels",
        ),
    )
}  # fmt: skip


@dataclass(frozen=True)
class PhotoDataset:
    """A denoising dataset of square patches cut from photographs: training patches from ``train_photo``, test
    patches from ``test_photo`` (an unseen photograph), each ``channels`` × ``photo_size`` in [0, 1]; a job's inputs
    are ``channels`` × P × P with P its ``dataset.patch``."""

    name: str
    channels: int
    photo_size: tuple[int, int]
    train_photo: str
    test_photo: str
    source: str


PHOTO_DATASETS: dict[str, PhotoDataset] = {
    "photos_denoising": PhotoDataset(
        "photos_denoising", 3, (427, 640), "china.jpg", "flower.jpg",
        "scikit-learn's bundled sample images (sklearn.datasets.load_sample_images): china.jpg and flower.jpg",
    ),
}  # fmt: skip


def image_input_shape(dataset) -> tuple[int, int, int] | None:
    """(C, H, W) of one input of a built-in image dataset (a ``DatasetSpec``, read by attribute: a photo dataset's
    depends on its ``patch``); ``None`` for flat data and uploads (known at run time only)."""
    if dataset.name in IMAGE_DATASETS:
        return IMAGE_DATASETS[dataset.name].input_shape
    photo = PHOTO_DATASETS.get(dataset.name)
    if photo is not None:
        return (photo.channels, dataset.patch, dataset.patch)
    return None


def is_pixel_image(name: str) -> bool:
    """Whether dataset ``name`` gives images in [0, 1] pixel space (every ε of an attack or certificate ≤ 1)."""
    return name in IMAGE_DATASETS or name in PHOTO_DATASETS
