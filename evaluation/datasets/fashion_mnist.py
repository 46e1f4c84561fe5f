"""Fashion-MNIST (Xiao, Rasul & Vollgraf, "Fashion-MNIST: a novel image dataset for benchmarking machine learning
algorithms", 2017): 28×28 grey-scale images of 10 kinds of clothing, 60 000 training and 10 000 test images, in
MNIST's gzipped IDX format (:mod:`evaluation.datasets.formats`)."""

from __future__ import annotations

from core.datasets import IMAGE_DATASETS
from evaluation.datasets.base import Dataset, register_dataset
from evaluation.datasets.files import register_source
from evaluation.datasets.formats import idx_dataset

FASHION_MNIST = IMAGE_DATASETS["fashion_mnist"]

# Zalando Research's own S3 bucket (the address their README links), with the MD5 sums torchvision publishes for
# these exact files (torchvision/datasets/mnist.py, ``FashionMNIST.mirrors`` and ``FashionMNIST.resources``).
register_source(
    "fashion_mnist",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    {
        "train-images-idx3-ubyte.gz": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "md5:25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "md5:bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "md5:bb300cfdad3c16e7a12a480ee83cd310",
    },
)


@register_dataset(
    "fashion_mnist", task="classification", input_shape=FASHION_MNIST.input_shape, valid_range=(0.0, 1.0),
    mean=FASHION_MNIST.mean, std=FASHION_MNIST.std,
)  # fmt: skip
def load_fashion_mnist(spec) -> Dataset:
    return idx_dataset(FASHION_MNIST, spec)
