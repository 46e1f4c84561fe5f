"""The image datasets read their published formats exactly, refuse damaged files naming them, verify checksums,
download once through pooch (from a local HTTP server: no network) and fail at once offline, leaving nothing behind.

Files are written by ``image_files`` (tests/image_files.py) in the published formats; the loaders are called with
a plain record of the dataset options they read (``name``, ``n_train``, ``n_test``, ``seed``, ``noise``)."""

from __future__ import annotations

import gzip
import http.server
import io
import shutil
import tarfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from image_files import (
    SIZES,
    UNREACHABLE,
    Split,
    cifar_bytes,
    idx_bytes,
    use_files,
    write_gzip,
    write_idx_files,
    write_tar_gz,
)

from core.config import get_settings
from core.datasets import IMAGE_DATASETS
from evaluation.datasets import DATASETS, SOURCES, DatasetFileError, load_dataset
from evaluation.datasets.formats import read_idx, read_tar_members

IMAGE_NAMES = sorted(IMAGE_DATASETS)


def options(name: str, n_train: int, n_test: int, seed: int = 0, noise: float = 0.0) -> SimpleNamespace:
    return SimpleNamespace(name=name, n_train=n_train, n_test=n_test, seed=seed, noise=noise)


@pytest.fixture
def own_copy(image_files, tmp_path, monkeypatch):
    """A private copy of the generated files (this test may damage them), in use as ``ROBUSTLAB_DATA_DIR``."""
    root = tmp_path / "data"
    shutil.copytree(image_files.root, root)
    use_files(monkeypatch, root, image_files.checksums)
    yield root
    monkeypatch.undo()
    get_settings.cache_clear()


# ------------------------------------------------------------------------------------------------ formats, exactly
@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_every_image_and_label_is_read_back_exactly_as_written(name: str, image_data_dir) -> None:
    n_train, n_test = SIZES[name]
    data = load_dataset(options(name, n_train, n_test))
    facts = IMAGE_DATASETS[name]
    assert data.x_train.dtype == torch.float32 and tuple(data.x_train.shape) == (n_train, *facts.input_shape)
    assert DATASETS[name].mean == facts.mean and len(facts.mean) == facts.input_shape[0] == len(facts.std)
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        written = image_data_dir.splits[name][split]
        index = (x[:, 0, 0, 0] * 255).round().long()  # pixel (0, 0, 0) holds the image's index in its split
        assert sorted(index.tolist()) == list(range(len(written.labels)))  # every image once: a permutation
        assert torch.equal((x * 255).round().to(torch.uint8), torch.from_numpy(written.images[index.numpy()]))
        assert torch.equal(y, torch.from_numpy(written.labels[index.numpy()]).long())
        assert torch.equal(x, (x * 255).round() / 255)  # exactly byte / 255: no normalisation applied


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_subsets_are_seeded_draws_without_replacement(name: str, image_data_dir) -> None:
    n_train, n_test = SIZES[name]
    first = load_dataset(options(name, n_train // 2, n_test // 2, seed=3))
    again = load_dataset(options(name, n_train // 2, n_test // 2, seed=3))
    other = load_dataset(options(name, n_train // 2, n_test // 2, seed=4))
    assert torch.equal(first.x_train, again.x_train) and torch.equal(first.y_test, again.y_test)
    assert not torch.equal(first.x_train, other.x_train)
    ids = (first.x_train[:, 0, 0, 0] * 255).round().long()
    assert len(set(ids.tolist())) == n_train // 2
    with pytest.raises(ValueError, match=rf"dataset.n_train = {n_train + 1}, but the train split of {name}"):
        load_dataset(options(name, n_train + 1, 1))


def test_training_noise_is_seeded_and_stays_in_the_unit_box(image_data_dir) -> None:
    clean = load_dataset(options("cifar10", 8, 4, seed=1))
    noisy = load_dataset(options("cifar10", 8, 4, seed=1, noise=0.2))
    assert torch.equal(noisy.x_train, load_dataset(options("cifar10", 8, 4, seed=1, noise=0.2)).x_train)
    assert float((noisy.x_train - clean.x_train).abs().max()) > 0.1 and torch.equal(noisy.x_test, clean.x_test)
    assert float(noisy.x_train.min()) >= 0.0 and float(noisy.x_train.max()) <= 1.0


# ------------------------------------------------------------------------------------------------ damaged files
def test_idx_headers_and_sizes_are_validated(tmp_path) -> None:
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    good = tmp_path / "good.gz"
    write_gzip(good, idx_bytes(images))
    assert np.array_equal(read_idx(good, 3), images)
    cases = {
        "wrong-type.gz": (bytes([0, 0, 0x09, 3]) + idx_bytes(images)[4:], "magic number 00000903 is not 00000803"),
        "wrong-ndim.gz": (idx_bytes(images), "magic number 00000803 is not 00000801"),
        "cut.gz": (idx_bytes(images)[:-1], r"sizes \(3, 4, 5\) \(60 bytes of data\), the file holds 59"),
        "long.gz": (idx_bytes(images) + b"\0", "the file holds 61: truncated or corrupt"),
        "header.gz": (idx_bytes(images)[:10], "the IDX header is cut off"),
    }
    for file, (payload, message) in cases.items():
        write_gzip(tmp_path / file, payload)
        with pytest.raises(DatasetFileError, match=rf"{file}: .*{message}"):
            read_idx(tmp_path / file, 1 if file == "wrong-ndim.gz" else 3)
    (tmp_path / "gzip-cut.gz").write_bytes(good.read_bytes()[:-12])
    with pytest.raises(DatasetFileError, match="gzip-cut.gz: not a complete gzip file"):
        read_idx(tmp_path / "gzip-cut.gz", 3)


def test_a_damaged_idx_split_fails_naming_its_file(image_files, own_copy, monkeypatch) -> None:
    folder = own_copy / "mnist"
    train = image_files.splits["mnist"]["train"]
    bad = {
        "labels": Split(train.images, train.labels[:-1]),  # one label short
        "range": Split(train.images, np.full_like(train.labels, 10)),  # label 10 of 10 classes
        "size": Split(train.images[:, :, :27, :27], train.labels),  # 27×27 images
    }
    expected = {
        "labels": r"train-labels-idx1-ubyte.gz: 63 labels for the 64 images",
        "range": r"train-labels-idx1-ubyte.gz: label 10 is out of range \(0..9\)",
        "size": r"train-images-idx3-ubyte.gz: images are \(27, 27\), those of mnist \(28, 28\)",
    }
    for case, split in bad.items():
        write_idx_files(folder, split, image_files.splits["mnist"]["test"])
        checksums = {"mnist": {p.name: "sha256:" + _sha256(p) for p in folder.iterdir()}}
        use_files(monkeypatch, own_copy, checksums)
        with pytest.raises(DatasetFileError, match=expected[case]):
            load_dataset(options("mnist", 4, 4))


def test_cifar_records_and_members_are_validated(image_files, own_copy, monkeypatch) -> None:
    archive = own_copy / "cifar100" / "cifar-100-binary.tar.gz"
    test = image_files.splits["cifar100"]["test"]
    train = image_files.splits["cifar100"]["train"]
    coarse_bad = cifar_bytes(train, coarse=True)
    coarse_bad = bytes([20]) + coarse_bad[1:]  # the first record's coarse label: 20 of 20 superclasses
    link = tarfile.TarInfo("cifar-100-binary/test.bin")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    cases = {
        "cut": (
            {
                "cifar-100-binary/train.bin": cifar_bytes(train, True)[:-1],
                "cifar-100-binary/test.bin": cifar_bytes(test, True),
            },
            "is not a whole number of 3074-byte records",
        ),  # fmt: skip
        "coarse": (
            {"cifar-100-binary/train.bin": coarse_bad, "cifar-100-binary/test.bin": cifar_bytes(test, True)},
            r"\(coarse label\): label 20 is out of range \(0..19\)",
        ),  # fmt: skip
        "absent": (
            {"cifar-100-binary/train.bin": cifar_bytes(train, True)},
            "the archive has no member cifar-100-binary/test.bin",
        ),  # fmt: skip
        "link": (
            {"cifar-100-binary/train.bin": cifar_bytes(train, True), link: b""},
            "member cifar-100-binary/test.bin is not a regular file",
        ),  # fmt: skip
    }
    for members, message in cases.values():
        _write_members(archive, members)
        use_files(monkeypatch, own_copy, {"cifar100": {archive.name: "sha256:" + _sha256(archive)}})
        with pytest.raises(DatasetFileError, match=message):
            load_dataset(options("cifar100", 4, 4))


def test_tar_members_are_read_in_memory_by_exact_name_only(tmp_path) -> None:
    archive = tmp_path / "a" / "x.tar.gz"
    _write_members(archive, {"../../escape.bin": b"evil", "dir/data.bin": b"data", "dir/data.bin.extra": b"x"})
    assert read_tar_members(archive, ["dir/data.bin"], max_bytes=4) == {"dir/data.bin": b"data"}
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "x.tar.gz"]  # nothing extracted anywhere
    with pytest.raises(DatasetFileError, match="member dir/data.bin has 4 bytes, more than the 3 expected"):
        read_tar_members(archive, ["dir/data.bin"], max_bytes=3)
    (tmp_path / "cut.tar.gz").write_bytes(archive.read_bytes()[:40])
    with pytest.raises(DatasetFileError, match="cut.tar.gz: not a complete .tar.gz archive"):
        read_tar_members(tmp_path / "cut.tar.gz", ["dir/data.bin"], max_bytes=4)


# ------------------------------------------------------------------------------------------------ checksums, download
@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_the_published_checksums_refuse_other_files_and_leave_them_alone(name, image_files, tmp_path, monkeypatch):
    """With the production table (not the test hook), the generated files are not the published ones: the job
    fails naming the file, without a download, and the user's file is left where it was."""
    root = tmp_path / "data"
    shutil.copytree(image_files.root / name, root / name)
    monkeypatch.setenv("ROBUSTLAB_DATA_DIR", str(root))
    get_settings.cache_clear()
    try:
        first = next(iter(SOURCES[name].checksums))  # the first one verified
        with pytest.raises(DatasetFileError, match=rf"{root / name / first} is truncated, corrupt or not the publ"):
            load_dataset(options(name, 2, 1))
        assert sorted(p.name for p in (root / name).iterdir()) == sorted(image_files.checksums[name])
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_offline_fails_at_once_naming_the_folder_and_every_file(image_files, tmp_path, monkeypatch) -> None:
    root = tmp_path / "empty"
    use_files(monkeypatch, root, image_files.checksums, base_url=UNREACHABLE)
    start = time.perf_counter()
    with pytest.raises(DatasetFileError) as failure:
        load_dataset(options("mnist", 2, 1))
    elapsed = time.perf_counter() - start
    message = str(failure.value)
    assert elapsed < 5.0, elapsed
    assert f"put the published files in {root / 'mnist'}" in message and f"ROBUSTLAB_DATA_DIR={root}" in message
    for file in SOURCES["mnist"].checksums:
        assert file in message
    assert f"{UNREACHABLE}train-images-idx3-ubyte.gz" in message and "ConnectionError" in message
    assert list(root.rglob("*.gz")) == [] and [p for p in root.rglob("*") if p.is_file()] == []
    get_settings.cache_clear()


class FileServer:
    """A local HTTP server (loopback only) serving a folder, counting the requests it answers."""

    def __init__(self, folder: Path):
        counter = self
        self.requests: list[str] = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self):  # noqa: N802 (http.server's name)
                counter.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def file_server(image_files):
    server = FileServer(image_files.root / "cifar10")
    yield server
    server.close()


def test_missing_files_are_downloaded_once_verified_and_cached(image_files, file_server, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    use_files(monkeypatch, root, image_files.checksums, base_url=file_server.url)
    first = load_dataset(options("cifar10", 6, 4))
    assert file_server.requests == ["/cifar-10-binary.tar.gz"]
    cached = root / "cifar10" / "cifar-10-binary.tar.gz"
    assert cached.read_bytes() == (image_files.root / "cifar10" / cached.name).read_bytes()
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no temporary file left
    again = load_dataset(options("cifar10", 6, 4))
    assert file_server.requests == ["/cifar-10-binary.tar.gz"] and torch.equal(first.x_train, again.x_train)
    get_settings.cache_clear()


def test_a_download_with_the_wrong_checksum_leaves_nothing_cached(image_files, file_server, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    checksums = {"cifar10": {"cifar-10-binary.tar.gz": "sha256:" + "0" * 64}}
    use_files(monkeypatch, root, checksums, base_url=file_server.url)
    with pytest.raises(DatasetFileError, match="does not match its published checksum sha256:0000.*nothing was saved"):
        load_dataset(options("cifar10", 2, 1))
    assert file_server.requests == ["/cifar-10-binary.tar.gz"]
    assert [p for p in root.rglob("*") if p.is_file()] == []
    get_settings.cache_clear()


def test_a_file_the_server_lacks_is_a_clear_failure(image_files, file_server, tmp_path, monkeypatch) -> None:
    use_files(monkeypatch, tmp_path / "cache", image_files.checksums, base_url=file_server.url + "missing/")
    with pytest.raises(DatasetFileError, match=r"could not be downloaded from .*missing/cifar-10-binary.tar.gz .*404"):
        load_dataset(options("cifar10", 2, 1))
    get_settings.cache_clear()


# ------------------------------------------------------------------------------------------------ helpers
def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_members(path: Path, members: dict) -> None:
    """A .tar.gz of ``{name or TarInfo: payload}`` (a TarInfo keeps its type: links, …)."""
    plain = {k: v for k, v in members.items() if isinstance(k, str)}
    write_tar_gz(path, plain)
    infos = [k for k in members if not isinstance(k, str)]
    if infos:
        buffer = io.BytesIO(gzip.decompress(path.read_bytes()))
        with tarfile.open(fileobj=buffer, mode="a") as archive:
            for info in infos:
                archive.addfile(info)
        path.write_bytes(gzip.compress(buffer.getvalue()))


# ------------------------------------------------------------------------------------------------ uploaded images
def test_uploaded_images_keep_their_shape_and_other_uploads_stay_flat(image_files, tmp_path) -> None:
    from evaluation.datasets import read_npz, uploaded

    train, test = image_files.splits["mnist"]["train"], image_files.splits["mnist"]["test"]
    x_train, x_test = train.images / np.float32(255), test.images / np.float32(255)
    arrays = {"y_train": train.labels.astype(np.int64), "y_test": test.labels.astype(np.int64)}
    images = tmp_path / "images.npz"
    np.savez(images, x_train=x_train, x_test=x_test, valid_range=np.array([0.0, 1.0]), **arrays)
    stored, meta = read_npz(images)
    assert stored["x_train"].shape == (64, 1, 28, 28) and np.array_equal(stored["x_test"], x_test)
    assert (meta["input_shape"], meta["input_dim"], meta["num_classes"]) == ([1, 28, 28], 784, 10)
    data = uploaded(images, n_train=10, n_test=5)
    assert tuple(data.x_train.shape) == (10, 1, 28, 28) and data.input_dim == 784
    grids = tmp_path / "grids.npz"  # (N, H, W): flattened, as uploads always were
    np.savez(grids, x_train=x_train[:, 0], x_test=x_test[:, 0], **arrays)
    stored, meta = read_npz(grids)
    assert stored["x_train"].shape == (64, 784) and meta["input_shape"] == [784]
    mixed = tmp_path / "mixed.npz"
    np.savez(mixed, x_train=x_train, x_test=x_test.reshape(32, -1), **arrays)
    with pytest.raises(ValueError, match=r"x_train's samples have shape \(1, 28, 28\) but x_test's \(784,\)"):
        read_npz(mixed)
    np.savez(mixed, x_train=x_train, x_test=x_test[:, :, :27, :27], **arrays)
    with pytest.raises(ValueError, match=r"shape \(1, 28, 28\) but x_test's \(1, 27, 27\): both splits must be"):
        read_npz(mixed)
