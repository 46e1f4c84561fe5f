"""Helpers shared by the CI gate's tests: run ``robustlab check`` in-process and read what it printed."""

from __future__ import annotations

from typing import Any

from typer.testing import CliRunner

from cli.main import app


def gate(*args: Any) -> Any:
    """``robustlab check ARGS…`` through typer's runner; an exception other than the exit is raised, not hidden."""
    result = CliRunner().invoke(app, ["check", *map(str, args)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def text(result) -> str:
    """stdout and stderr, with rich's line wrapping undone."""
    return " ".join((result.stdout + result.stderr).split())
