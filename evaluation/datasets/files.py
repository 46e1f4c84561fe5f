"""The published files of a dataset: found in ``ROBUSTLAB_DATA_DIR``, or fetched once from their canonical source,
each verified against its published checksum.

::

    register_source("mnist", "https://ossci-datasets.s3.amazonaws.com/mnist/", {"train-images-idx3-ubyte.gz":
                    "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873", …})       # in the dataset's module
    paths = fetch("mnist")        # {file name: path}, every file present and verified

A dataset's files live in ``<data_dir>/<dataset>/`` (``core.config.Settings.data_dir``). A file that is there must
match its checksum, or the job fails naming it (nothing is downloaded over it: it may be the user's own copy). A
missing file is downloaded by pooch, which streams it to a temporary file in the same folder, checks the hash and
only then moves it to its name: a failed or interrupted download, or one with the wrong checksum, leaves nothing
behind. The connection times out after :data:`CONNECT_TIMEOUT` seconds, so an offline machine fails at once with a
message naming the folder and the files to put there.

:data:`SOURCES` is the production table of URLs and published checksums; tests put their own files in a temporary
``ROBUSTLAB_DATA_DIR`` and replace a dataset's entry here (``monkeypatch.setitem``), never touching the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

CONNECT_TIMEOUT = 5.0  # seconds to reach the server: an offline machine fails within this
READ_TIMEOUT = 60.0  # seconds without a byte from a connected server


class DatasetFileError(RuntimeError):
    """A dataset's file is missing and cannot be downloaded, or is there but truncated, corrupt or not the
    published one. The message names the file (and, for a missing one, the folder and every file to put there)."""


@dataclass(frozen=True)
class Source:
    """Where a dataset's files come from: ``base_url + name`` for each file, and each file's published checksum
    (``"md5:<hex>"`` or ``"sha256:<hex>"``, pooch's format)."""

    dataset: str
    base_url: str
    checksums: Mapping[str, str] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return self.base_url + name


SOURCES: dict[str, Source] = {}


def register_source(dataset: str, base_url: str, checksums: Mapping[str, str]) -> Source:
    """Declare a dataset's files (once)."""
    if dataset in SOURCES:
        raise ValueError(f"the files of dataset {dataset!r} are declared twice")
    SOURCES[dataset] = Source(dataset, base_url, dict(checksums))
    return SOURCES[dataset]


def data_dir() -> Path:
    """The root of the datasets' files: ``ROBUSTLAB_DATA_DIR`` (default ``~/.cache/robustlab/data``)."""
    from core.config import get_settings

    return Path(get_settings().data_dir).expanduser()


def fetch(dataset: str) -> dict[str, Path]:
    """Every file of ``dataset``, present and verified, by name: verify those in ``<data_dir>/<dataset>/``,
    download the missing ones.

    Raises:
        DatasetFileError: a file there fails its checksum, or a missing one cannot be downloaded (offline, not
            found, wrong checksum) or written.
    """
    source = SOURCES[dataset]
    folder = data_dir() / dataset
    paths = {name: folder / name for name in source.checksums}
    missing = [name for name, path in paths.items() if not path.is_file()]
    for name, path in paths.items():
        if name not in missing:
            verify(path, source.checksums[name], source.url(name))
    for name in missing:
        download(source, name, folder, missing)
    return paths


def verify(path: Path, expected: str, url: str) -> None:
    """Raise :class:`DatasetFileError` unless the file's hash is ``expected`` (``"<alg>:<hex>"``)."""
    import pooch

    algorithm, _, digest = expected.partition(":")
    try:
        actual = pooch.file_hash(str(path), alg=algorithm)
    except OSError as exc:
        raise DatasetFileError(f"cannot read dataset file {path}: {exc}") from None
    if actual.lower() != digest.lower():
        raise DatasetFileError(
            f"dataset file {path} is truncated, corrupt or not the published file: its {algorithm} is {actual}, "
            f"the published one {digest}. Delete it (it is downloaded again when the machine is online) or replace "
            f"it with the file from {url}"
        )


def download(source: Source, name: str, folder: Path, missing: list[str]) -> Path:
    """Fetch ``name`` into ``folder`` with pooch (temporary file, hash check, then rename)."""
    import pooch
    import requests

    url = source.url(name)
    downloader = pooch.HTTPDownloader(progressbar=False, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
    try:
        return Path(pooch.retrieve(url, source.checksums[name], fname=name, path=folder, downloader=downloader))
    except requests.exceptions.RequestException as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise DatasetFileError(
            f"dataset {source.dataset!r}: {name} is not in {folder} and could not be downloaded from {url} "
            f"({reason[:300]}). Offline, put the published files in {folder} (ROBUSTLAB_DATA_DIR={data_dir()}): "
            f"{', '.join(missing)} (from {source.base_url})"
        ) from None
    except ValueError as exc:  # pooch: the downloaded file's hash is not the published one (nothing was kept)
        raise DatasetFileError(
            f"dataset {source.dataset!r}: the file downloaded from {url} does not match its published checksum "
            f"{source.checksums[name]}; nothing was saved to {folder / name} ({exc})"
        ) from None
    except OSError as exc:
        raise DatasetFileError(f"dataset {source.dataset!r}: cannot write {folder / name}: {exc}") from None
