"""CIFAR-10 (Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009): 32×32 colour images of 10
classes, 50 000 training images in five batches and 10 000 test images, read from the published *binary* version
(``cifar-10-binary.tar.gz``; records of 1 label byte and 3072 pixel bytes, :mod:`evaluation.datasets.formats`): no
pickle is ever loaded."""

from __future__ import annotations

from core.datasets import IMAGE_DATASETS
from evaluation.datasets.base import Dataset, register_dataset
from evaluation.datasets.files import register_source
from evaluation.datasets.formats import cifar_dataset

CIFAR10 = IMAGE_DATASETS["cifar10"]
ARCHIVE = "cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
TRAIN = [f"{FOLDER}/data_batch_{i}.bin" for i in range(1, 6)]
TEST = [f"{FOLDER}/test_batch.bin"]

# The MD5 sum the dataset's page publishes for the binary version (https://www.cs.toronto.edu/~kriz/cifar.html,
# "CIFAR-10 binary version (suitable for C programs)"; torchvision lists only the python version's).
register_source("cifar10", "https://www.cs.toronto.edu/~kriz/", {ARCHIVE: "md5:c32a1d4ab5d03f1284b67883e8d87530"})


@register_dataset(
    "cifar10", task="classification", input_shape=CIFAR10.input_shape, valid_range=(0.0, 1.0), mean=CIFAR10.mean,
    std=CIFAR10.std,
)  # fmt: skip
def load_cifar10(spec) -> Dataset:
    return cifar_dataset(CIFAR10, spec, ARCHIVE, TRAIN, TEST, label_bytes=1)
