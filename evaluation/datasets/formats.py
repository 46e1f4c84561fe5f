"""The published file formats of the image datasets, read with numpy (no pickle, nothing extracted to disk), and
the seeded ``n_train`` / ``n_test`` subsets every image dataset takes.

* **IDX** (LeCun et al.'s MNIST format, also Fashion-MNIST's), gzipped: a magic number ``00 00 08 ND`` (unsigned
  bytes, ND dimensions), ND big-endian 32-bit sizes, then the bytes in row-major order.
* **CIFAR binary** (Krizhevsky, ``cifar-10-binary.tar.gz`` / ``cifar-100-binary.tar.gz``): records of the label
  byte(s) (CIFAR-100: coarse then fine) and 3072 pixel bytes, the 1024 red, then green, then blue values of a 32×32
  image in row-major order. Members are read from the archive in memory, by exact name, and only when they are
  regular files.

Every reader checks the sizes it is told against the ones the file holds and raises
:class:`~evaluation.datasets.files.DatasetFileError` naming the file on any mismatch.
"""

from __future__ import annotations

import gzip
import math
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from core.datasets import ImageDataset
from evaluation.datasets.base import Dataset
from evaluation.datasets.files import DatasetFileError, data_dir, fetch

IDX_UBYTE = 0x08
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CIFAR_PIXELS = 3 * 32 * 32


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The unsigned-byte array of ``ndim`` dimensions in the gzipped IDX file ``path``, header validated: the magic
    number, the number of dimensions, and exactly prod(sizes) bytes of data after the header."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetFileError(f"{path}: not a complete gzip file ({type(exc).__name__}: {exc})") from None
    magic = bytes([0, 0, IDX_UBYTE, ndim])
    if raw[:4] != magic:
        raise DatasetFileError(
            f"{path}: IDX magic number {raw[:4].hex()} is not {magic.hex()} (unsigned bytes, {ndim} dimensions)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetFileError(f"{path}: the IDX header is cut off ({len(raw)} bytes)")
    sizes = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - header != math.prod(sizes):
        raise DatasetFileError(
            f"{path}: the IDX header gives sizes {sizes} ({math.prod(sizes)} bytes of data), the file holds "
            f"{len(raw) - header}: truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(sizes)


def check_labels(labels: np.ndarray, classes: int, where: str) -> None:
    if len(labels) and int(labels.max()) >= classes:
        raise DatasetFileError(f"{where}: label {int(labels.max())} is out of range (0..{classes - 1})")


def idx_split(facts: ImageDataset, images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 1, H, W), labels (N,)) of one split from its two IDX files, shapes checked against ``facts``."""
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    if images.shape[1:] != facts.input_shape[1:]:
        shape = facts.input_shape[1:]
        raise DatasetFileError(f"{images_path}: images are {images.shape[1:]}, those of {facts.name} {shape}")
    if len(labels) != len(images):
        raise DatasetFileError(f"{labels_path}: {len(labels)} labels for the {len(images)} images of {images_path}")
    check_labels(labels, facts.num_classes, str(labels_path))
    return images[:, None], labels


def idx_dataset(facts: ImageDataset, spec) -> Dataset:
    """An IDX dataset (MNIST, Fashion-MNIST): its four files fetched and verified, then the spec's subsets."""
    paths = fetch(facts.name)
    splits = [idx_split(facts, paths[images], paths[labels]) for images, labels in IDX_FILES.values()]
    return image_subsets(facts, *splits, spec)


def read_tar_members(path: Path, names: list[str], max_bytes: int) -> dict[str, bytes]:
    """The contents of the members ``names`` of the gzipped tar ``path``, read in memory in one pass. Only members
    with exactly these names are read, each must be a regular file (no link, device or directory) of at most
    ``max_bytes``, and must appear once: nothing is written to disk, so no member's path can escape anywhere."""
    wanted, found = set(names), {}
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                if member.name not in wanted:
                    continue
                where = f"{path}: member {member.name}"
                if member.name in found:
                    raise DatasetFileError(f"{where} appears twice")
                if not member.isfile():
                    raise DatasetFileError(f"{where} is not a regular file")
                if member.size > max_bytes:
                    raise DatasetFileError(f"{where} has {member.size} bytes, more than the {max_bytes} expected")
                handle = archive.extractfile(member)
                found[member.name] = handle.read() if handle is not None else b""
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DatasetFileError(f"{path}: not a complete .tar.gz archive ({type(exc).__name__}: {exc})") from None
    absent = [name for name in names if name not in found]
    if absent:
        raise DatasetFileError(f"{path}: the archive has no member {absent[0]} ({len(absent)} of {len(names)} missing)")
    return found


def cifar_records(raw: bytes, label_bytes: int, facts: ImageDataset, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3072) — a view, not yet copied —, labels (N,)) of a CIFAR binary file's records. The label used
    is the last label byte (CIFAR-100: the fine label); every label byte is range-checked (CIFAR-100's coarse
    labels: 20 superclasses)."""
    record = label_bytes + CIFAR_PIXELS
    if not raw or len(raw) % record:
        raise DatasetFileError(f"{where}: {len(raw)} bytes is not a whole number of {record}-byte records")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    if label_bytes == 2:
        check_labels(rows[:, 0], 20, f"{where} (coarse label)")
    labels = rows[:, label_bytes - 1]
    check_labels(labels, facts.num_classes, where)
    return rows[:, label_bytes:], labels


def cifar_dataset(
    facts: ImageDataset, spec, archive: str, train: list[str], test: list[str], label_bytes: int
) -> Dataset:
    """A CIFAR dataset from its binary archive: the members ``train`` and ``test`` (paths inside the archive) read
    as :func:`cifar_records`, then the spec's subsets."""
    path = fetch(facts.name)[archive]
    record = label_bytes + CIFAR_PIXELS
    members = read_tar_members(path, [*train, *test], max_bytes=facts.n_train * record)
    splits = []
    for names in (train, test):
        raw = members[names[0]] if len(names) == 1 else b"".join(members[name] for name in names)
        splits.append(cifar_records(raw, label_bytes, facts, f"{path}: {', '.join(names)}"))
    return image_subsets(facts, *splits, spec)


def image_subsets(
    facts: ImageDataset, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], spec
) -> Dataset:
    """``spec.n_train`` training and ``spec.n_test`` test images drawn without replacement by a generator seeded
    with ``spec.seed`` (training subset first), as float32 (N, C, H, W) in [0, 1] (byte / 255). ``spec.noise`` > 0
    adds seeded Gaussian noise to the training images, clipped to [0, 1]. Only the chosen images are converted."""
    gen = torch.Generator().manual_seed(spec.seed)
    tensors = []
    for (images, labels), n, split in ((train, spec.n_train, "train"), (test, spec.n_test, "test")):
        if n > len(images):
            raise ValueError(
                f"dataset.n_{split} = {n}, but the {split} split of {facts.name} in {data_dir() / facts.name} holds "
                f"{len(images)} images"
            )
        chosen = torch.randperm(len(images), generator=gen)[:n].numpy()
        x = torch.from_numpy(np.ascontiguousarray(images[chosen])).reshape(n, *facts.input_shape)
        tensors += [x.to(torch.float32).div_(255.0), torch.from_numpy(labels[chosen].astype(np.int64))]
    x_train, y_train, x_test, y_test = tensors
    if spec.noise > 0:
        x_train = (x_train + spec.noise * torch.randn(x_train.shape, generator=gen)).clamp_(0.0, 1.0)
    return Dataset(x_train, y_train, x_test, y_test, num_classes=facts.num_classes, valid_range=(0.0, 1.0))
