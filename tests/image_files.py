"""Small files in exactly the published formats of the image datasets, for tests that never touch the network.

* MNIST / Fashion-MNIST: the four gzipped IDX files (magic ``00 00 08 ND``, big-endian sizes, row-major bytes);
* CIFAR-10: ``cifar-10-binary.tar.gz`` holding ``cifar-10-batches-bin/data_batch_1.bin`` … ``_5.bin`` and
  ``test_batch.bin`` (records: 1 label byte + 3072 pixel bytes, R then G then B planes) and ``batches.meta.txt``;
* CIFAR-100: ``cifar-100-binary.tar.gz`` holding ``cifar-100-binary/train.bin`` and ``test.bin`` (records: coarse
  label, fine label, 3072 pixel bytes).

The images are learnable: class k is a bright square at the k-th of a grid of places over dim noise, and the first
pixel of every image holds its index in its split (so a test can pair each loaded image with the one written).
:func:`write_image_files` writes every dataset under one root and returns each file's SHA-256, in pooch's
``"sha256:<hex>"`` form, for the test hook that replaces the published checksums.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: (n_train, n_test) written per dataset: the contract test asks 12 / 8, the end-to-end MNIST job 64 / 32
SIZES = {"mnist": (64, 32), "fashion_mnist": (16, 10), "cifar10": (20, 10), "cifar100": (16, 10)}
SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32)}
CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}


@dataclass
class Split:
    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) uint8


@dataclass
class ImageFiles:
    """What :func:`write_image_files` wrote: the root, each dataset's splits and each file's checksum."""

    root: Path
    splits: dict[str, dict[str, Split]] = field(default_factory=dict)
    checksums: dict[str, dict[str, str]] = field(default_factory=dict)


def class_images(n: int, shape: tuple[int, int, int], classes: int, rng: np.random.Generator) -> Split:
    """``n`` images of ``shape``: labels 0, 1, … cycling through the classes; label k's image is noise in 0..60 with
    a square of 200..255 at place k mod 12 of a 4×3 grid; pixel (0, 0, 0) is the image's index."""
    channels, height, width = shape
    labels = (np.arange(n) % classes).astype(np.uint8)
    images = rng.integers(0, 61, size=(n, *shape), dtype=np.uint8)
    side = width // 4 - 1
    for i, k in enumerate(labels):
        row, col = divmod(int(k) % 12, 4)
        top, left = 1 + row * side, 1 + col * (width // 4)
        images[i, :, top : top + side, left : left + side] = rng.integers(200, 256, size=(channels, side, side))
    images[:, 0, 0, 0] = np.arange(n) % 256
    return Split(images, labels)


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of an unsigned-byte array: ``00 00 08 ndim``, each size as a big-endian uint32, the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_gzip(path: Path, payload: bytes) -> None:
    path.write_bytes(gzip.compress(payload, mtime=0))


def write_idx_files(folder: Path, train: Split, test: Split) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, split in (("train", train), ("t10k", test)):
        write_gzip(folder / f"{prefix}-images-idx3-ubyte.gz", idx_bytes(split.images[:, 0]))
        write_gzip(folder / f"{prefix}-labels-idx1-ubyte.gz", idx_bytes(split.labels))


def cifar_bytes(split: Split, coarse: bool = False) -> bytes:
    """CIFAR binary records: [coarse label,] label, then the 3072 pixel bytes (R, G, B planes, row-major)."""
    labels = [split.labels[:, None] // 5, split.labels[:, None]] if coarse else [split.labels[:, None]]
    rows = np.concatenate([*labels, split.images.reshape(len(split.images), -1)], axis=1).astype(np.uint8)
    return rows.tobytes()


def write_tar_gz(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))


def write_cifar10(path: Path, train: Split, test: Split) -> None:
    """``cifar-10-binary.tar.gz``: the training images split over five batches (as the published file does)."""
    batches = np.array_split(np.arange(len(train.labels)), 5)
    members = {
        f"cifar-10-batches-bin/data_batch_{i + 1}.bin": cifar_bytes(Split(train.images[b], train.labels[b]))
        for i, b in enumerate(batches)
    }
    members["cifar-10-batches-bin/test_batch.bin"] = cifar_bytes(test)
    members["cifar-10-batches-bin/batches.meta.txt"] = b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\n"
    write_tar_gz(path, members)


def write_cifar100(path: Path, train: Split, test: Split) -> None:
    write_tar_gz(
        path,
        {"cifar-100-binary/train.bin": cifar_bytes(train, True), "cifar-100-binary/test.bin": cifar_bytes(test, True)},
    )


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def write_image_files(root: Path, seed: int = 0) -> ImageFiles:
    """Every image dataset's files under ``root/<dataset>/``, with their checksums."""
    rng = np.random.default_rng(seed)
    out = ImageFiles(root)
    for name, (n_train, n_test) in SIZES.items():
        train = class_images(n_train, SHAPES[name], CLASSES[name], rng)
        test = class_images(n_test, SHAPES[name], CLASSES[name], rng)
        folder = root / name
        if name in ("mnist", "fashion_mnist"):
            write_idx_files(folder, train, test)
        elif name == "cifar10":
            write_cifar10(folder / "cifar-10-binary.tar.gz", train, test)
        else:
            write_cifar100(folder / "cifar-100-binary.tar.gz", train, test)
        out.splits[name] = {"train": train, "test": test}
        out.checksums[name] = {path.name: sha256(path) for path in sorted(folder.iterdir())}
    return out


UNREACHABLE = "http://127.0.0.1:9/"  # the discard port on loopback: nothing listens, a connection is refused at once


def use_files(monkeypatch, root: Path, checksums: dict[str, dict[str, str]], base_url: str = UNREACHABLE) -> None:
    """For this test: ``ROBUSTLAB_DATA_DIR`` = ``root`` and, for each dataset in ``checksums``, those checksums in
    place of the published ones and ``base_url`` in place of its source (by default an unreachable local address,
    so a test that misses a file fails at once instead of downloading). Undone by ``monkeypatch`` (the settings'
    cache is cleared here; clear it again after ``monkeypatch.undo()``)."""
    from dataclasses import replace

    from core.config import get_settings
    from evaluation.datasets import SOURCES

    monkeypatch.setenv("ROBUSTLAB_DATA_DIR", str(root))
    for name, files in checksums.items():
        source = SOURCES[name]
        ours = {file: files[file] for file in source.checksums}
        monkeypatch.setitem(SOURCES, name, replace(source, base_url=base_url, checksums=ours))
    get_settings.cache_clear()
