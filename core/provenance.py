"""What identifies the code that produced a number: the package version, the commit and a dirty flag.

The version is written in one place, ``pyproject.toml`` (``[project] version``); nothing else spells it. From a
checkout it is read from that file (so a bump is seen without reinstalling), from an installed wheel or a Docker
image from the installed metadata (:func:`importlib.metadata.version`).

The **code identity** of a run joins the version with the state of the code::

    <version>+g1a2b3c4d5e6f                 a clean checkout at commit 1a2b3c4d5e6f…
    <version>+g1a2b3c4d5e6f.dirty.9f8e7d6c  the same commit with local changes (9f8e7d6c: digest of the sources)
    <version>+src.9f8e7d6c5b4a              no git checkout (an installed wheel, a Docker image): digest of sources

The digest is the SHA-256 of the Python sources of the packages (path and content of every ``*.py`` file), so two
different edits of the same commit, or two images built from different trees, never share an identity. A Docker
build may pass the commit it was built from as ``ROBUSTLAB_GIT_COMMIT``; it is recorded (``commit``), but the
identity still comes from the sources that are actually there.

Torch-free: the API (which never imports torch) calls :func:`current_code` at submission to de-duplicate jobs.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the installed metadata's version is used
    tomllib = None  # type: ignore[assignment]

DISTRIBUTION = "robustlab"
#: the directory holding the packages: the checkout's root, or site-packages for an installed wheel
ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("api", "cli", "core", "db", "evaluation", "models", "worker")
UNKNOWN_VERSION = "0+unknown"
GIT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class CodeIdentity:
    """``identity`` is the string stored with every job (``jobs.code_version``) and compared by de-duplication;
    the other fields say where it came from. ``commit`` and ``dirty`` are ``None`` without a git checkout."""

    identity: str
    version: str
    commit: str | None
    dirty: bool | None
    source_digest: str
    origin: str  # "git" (a checkout) or "sources" (no .git: installed wheel, Docker image)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def package_version(root: Path = ROOT) -> str:
    """``[project] version`` of ``root/pyproject.toml`` when ``root`` is a robustlab checkout, else the installed
    distribution's version, else ``0+unknown``."""
    pyproject = root / "pyproject.toml"
    if tomllib is not None and pyproject.is_file():
        try:
            project = tomllib.loads(pyproject.read_text()).get("project", {})
        except (OSError, tomllib.TOMLDecodeError):
            project = {}
        if project.get("name") == DISTRIBUTION and isinstance(project.get("version"), str):
            return project["version"]
    try:
        return installed_version(DISTRIBUTION)
    except PackageNotFoundError:
        return UNKNOWN_VERSION


def source_digest(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> str:
    """SHA-256 (hex) over the relative path and the bytes of every ``*.py`` file of ``packages`` under ``root``,
    in sorted order (``__pycache__`` skipped)."""
    digest = hashlib.sha256()
    files = sorted(
        path
        for package in packages
        if (root / package).is_dir()
        for path in (root / package).rglob("*.py")
        if "__pycache__" not in path.parts
    )
    for path in files:
        relative = path.relative_to(root).as_posix().encode()
        content = path.read_bytes()
        digest.update(len(relative).to_bytes(8, "big") + relative + len(content).to_bytes(8, "big") + content)
    return digest.hexdigest()


def _git(root: Path, *args: str) -> str | None:
    """``git -C root args…``'s stdout, or ``None`` if git is missing, ``root`` is not in a work tree, or it fails.
    ``GIT_OPTIONAL_LOCKS=0``: ``git status`` must not take the index lock of a checkout someone is working in."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S, env=env
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(root: Path = ROOT) -> tuple[str, bool] | None:
    """``(commit, dirty)`` when ``root`` is the top of a git work tree (not merely somewhere inside another
    repository, e.g. a virtual environment in a checkout); ``None`` otherwise. ``dirty``: ``git status`` lists a
    change (tracked or untracked, ignored files aside)."""
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top.strip()).resolve() != root.resolve():
        return None
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain")
    if commit is None or status is None:
        return None
    return commit.strip(), bool(status.strip())


def code_identity(root: Path = ROOT) -> CodeIdentity:
    """The identity of the code under ``root`` (see the module docstring). Not cached: :func:`current_code` is."""
    version = package_version(root)
    digest = source_digest(root)
    state = git_state(root)
    if state is None:
        commit = os.environ.get("ROBUSTLAB_GIT_COMMIT") or None
        return CodeIdentity(f"{version}+src.{digest[:12]}", version, commit, None, digest, "sources")
    commit, dirty = state
    identity = f"{version}+g{commit[:12]}" + (f".dirty.{digest[:8]}" if dirty else "")
    return CodeIdentity(identity, version, commit, dirty, digest, "git")


@functools.cache
def current_code() -> CodeIdentity:
    """The identity of the code this process runs, computed once (the modules are loaded at start-up; later edits
    to the files do not change what runs)."""
    return code_identity(ROOT)


__all__ = ["CodeIdentity", "code_identity", "current_code", "git_state", "package_version", "source_digest"]
