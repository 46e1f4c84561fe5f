"""CIFAR-100 (Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009): 32×32 colour images of
100 fine classes in 20 superclasses, 50 000 training and 10 000 test images, read from the published *binary*
version (``cifar-100-binary.tar.gz``; records of a coarse and a fine label byte and 3072 pixel bytes,
:mod:`evaluation.datasets.formats`). The labels are the fine ones."""

from __future__ import annotations

from core.datasets import IMAGE_DATASETS
from evaluation.datasets.base import Dataset, register_dataset
from evaluation.datasets.files import register_source
from evaluation.datasets.formats import cifar_dataset

CIFAR100 = IMAGE_DATASETS["cifar100"]
ARCHIVE = "cifar-100-binary.tar.gz"
TRAIN = ["cifar-100-binary/train.bin"]
TEST = ["cifar-100-binary/test.bin"]

# The MD5 sum the dataset's page publishes for the binary version (https://www.cs.toronto.edu/~kriz/cifar.html,
# "CIFAR-100 binary version (suitable for C programs)"; torchvision lists only the python version's).
register_source("cifar100", "https://www.cs.toronto.edu/~kriz/", {ARCHIVE: "md5:03b5dce01913d631647c71ecec9e9cb8"})


@register_dataset(
    "cifar100", task="classification", input_shape=CIFAR100.input_shape, valid_range=(0.0, 1.0),
    mean=CIFAR100.mean, std=CIFAR100.std,
)  # fmt: skip
def load_cifar100(spec) -> Dataset:
    return cifar_dataset(CIFAR100, spec, ARCHIVE, TRAIN, TEST, label_bytes=2)
