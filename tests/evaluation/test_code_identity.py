"""The version is written once (pyproject.toml) and the code identity follows the commit, the dirty state and, without
git, the sources: real git repositories in a temporary directory."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib

from core import provenance
from core.provenance import code_identity, current_code, package_version

REPO = Path(__file__).resolve().parents[2]
GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")


def _pyproject_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def _source_files() -> list[Path]:
    """The checkout's files (tracked and untracked, git's ignores applied; every file under the root without git)."""
    if GIT is not None and (REPO / ".git").exists():
        listed = subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard"],
            capture_output=True, text=True, check=True,
        ).stdout.splitlines()  # fmt: skip
        return [REPO / name for name in listed if (REPO / name).is_file()]
    skip = {".venv", ".git", "__pycache__", "artifacts", "runs", "test-output"}
    return [p for p in REPO.rglob("*") if p.is_file() and not skip & set(p.relative_to(REPO).parts)]


def _literal(version: str) -> re.Pattern[str]:
    """``version`` as a token: not inside a longer number or name (``10.1.0``, ``0.1.01``, ``0.1.0.2``)."""
    return re.compile(rf"(?<![\w.]){re.escape(version)}(?![\w]|\.\d)")


def test_the_version_is_written_in_pyproject_only() -> None:
    version = _pyproject_version()
    assert package_version() == version == current_code().version
    literal = _literal(version)
    found = []
    for path in _source_files():
        if path == REPO / "pyproject.toml":
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue  # binary files (plots, weights)
        lines = enumerate(text.splitlines(), 1)
        found += [f"{path.relative_to(REPO)}:{n}" for n, line in lines if literal.search(line)]
    assert found == [], f"the version {version!r} is typed outside pyproject.toml: {found}"


def test_the_literal_search_would_find_a_typed_version() -> None:
    """The pattern of the test above matches the version as code writes it, and not inside other numbers."""
    version = _pyproject_version()
    literal = _literal(version)
    assert literal.search(f'VERSION = "{version}"') and literal.search(f"version {version}.")
    assert not any(literal.search(text) for text in (f"1{version}", f"{version}1", f"{version}.2"))


# ---------------------------------------------------------------------------------------------------- git
def _git(root: Path, *args: str) -> str:
    command = ["git", "-C", str(root), "-c", "user.name=test", "-c", "user.email=test@example.invalid", *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def _tiny_checkout(root: Path, version: str = "3.4.5") -> Path:
    (root / "evaluation").mkdir(parents=True)
    (root / "pyproject.toml").write_text(f'[project]\nname = "robustlab"\nversion = "{version}"\n')
    (root / "evaluation" / "gaussian.py").write_text("PROTOCOL_REVISION = 1\n")
    return root


@needs_git
def test_two_commits_give_two_code_identities_and_a_dirty_tree_says_so(tmp_path: Path) -> None:
    repo = _tiny_checkout(tmp_path / "repo")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "first")
    first_commit = _git(repo, "rev-parse", "HEAD")
    first = code_identity(repo)
    assert (first.commit, first.dirty, first.origin, first.version) == (first_commit, False, "git", "3.4.5")
    assert first.identity == f"3.4.5+g{first_commit[:12]}"

    (repo / "evaluation" / "gaussian.py").write_text("PROTOCOL_REVISION = 2\n")
    dirty = code_identity(repo)
    assert dirty.dirty is True and dirty.commit == first_commit
    assert dirty.identity.startswith(f"{first.identity}.dirty.") and dirty.identity != first.identity
    (repo / "evaluation" / "gaussian.py").write_text("PROTOCOL_REVISION = 3\n")
    assert code_identity(repo).identity not in (first.identity, dirty.identity)  # another edit, another identity

    _git(repo, "commit", "-qam", "second")
    second = code_identity(repo)
    assert second.dirty is False and second.commit != first_commit and second.identity != first.identity

    # a second checkout at the first commit: the same identity as the first, wherever it lies
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True, capture_output=True)
    _git(clone, "checkout", "-q", first_commit)
    assert code_identity(clone).identity == first.identity
    assert code_identity(clone).identity != code_identity(repo).identity


def test_without_git_the_identity_is_the_digest_of_the_sources(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("ROBUSTLAB_GIT_COMMIT", raising=False)
    a = _tiny_checkout(tmp_path / "a")
    b = _tiny_checkout(tmp_path / "b")
    ida, idb = code_identity(a), code_identity(b)
    assert ida.origin == "sources" and ida.commit is None and ida.dirty is None
    assert ida.identity == idb.identity == f"3.4.5+src.{ida.source_digest[:12]}"  # same sources, same identity
    (b / "evaluation" / "gaussian.py").write_text("PROTOCOL_REVISION = 2\n")
    assert code_identity(b).identity != ida.identity
    (b / "evaluation" / "__pycache__").mkdir()
    (b / "evaluation" / "__pycache__" / "junk.py").write_text("x = 1\n")  # caches are not sources
    assert code_identity(b).source_digest == provenance.source_digest(b)
    monkeypatch.setenv("ROBUSTLAB_GIT_COMMIT", "f" * 40)  # a Docker build's record: kept, not trusted as identity
    assert code_identity(a).commit == "f" * 40 and code_identity(a).identity == ida.identity


def test_without_pyproject_the_installed_version_is_used(tmp_path: Path) -> None:
    from importlib.metadata import version

    (tmp_path / "evaluation").mkdir()
    assert package_version(tmp_path) == version("robustlab")


@needs_git
def test_this_process_reports_this_checkout() -> None:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    code = current_code()  # computed once, at the first call: files edited since do not change it
    assert code.origin == "git" and code.commit == _git(REPO, "rev-parse", "HEAD")
    fresh = code_identity(REPO)
    assert fresh.dirty == bool(_git(REPO, "status", "--porcelain")) and fresh.commit == code.commit


def test_the_kept_weights_file_is_the_one_the_runner_writes() -> None:
    from db.artifacts import JOB_WEIGHTS_FILE
    from models.io import WEIGHTS_FILE

    assert JOB_WEIGHTS_FILE == WEIGHTS_FILE  # db names it without importing torch
