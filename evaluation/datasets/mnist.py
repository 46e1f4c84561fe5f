"""MNIST (LeCun, Cortes & Burges, "The MNIST database of handwritten digits"): 28×28 grey-scale digits, 60 000
training and 10 000 test images, read from the four published gzipped IDX files (:mod:`evaluation.datasets.formats`).
"""

from __future__ import annotations

from core.datasets import IMAGE_DATASETS
from evaluation.datasets.base import Dataset, register_dataset
from evaluation.datasets.files import register_source
from evaluation.datasets.formats import idx_dataset

MNIST = IMAGE_DATASETS["mnist"]

# The mirror torchvision downloads from, and the MD5 sums it publishes for these exact files
# (torchvision/datasets/mnist.py, ``MNIST.mirrors`` and ``MNIST.resources``).
register_source(
    "mnist",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    {
        "train-images-idx3-ubyte.gz": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "md5:d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "md5:9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "md5:ec29112dd5afa0611ce80d1b7f02629c",
    },
)


@register_dataset(
    "mnist", task="classification", input_shape=MNIST.input_shape, valid_range=(0.0, 1.0), mean=MNIST.mean,
    std=MNIST.std,
)  # fmt: skip
def load_mnist(spec) -> Dataset:
    return idx_dataset(MNIST, spec)
