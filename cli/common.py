"""What the ``robustlab`` commands share: the consoles, the error exit and reading a spec file.

Exit codes: 0 success, 1 the job failed (or was cancelled), 2 bad input or an unreachable / erroring server::

    data = read_spec_file(path)                 # exit 2 with a clear message if missing or not a JSON object
    raise fail("--format: table or json")       # prints "error: …" to stderr, exit 2
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

ServerOption = Annotated[str | None, typer.Option("--server", help="API address (default: settings.server_url)")]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` to stderr and return the exit to raise: ``raise fail(…)``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def read_spec_file(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; exit 2 with a clear message if it is missing or not JSON."""
    if not path.exists():
        raise fail(f"spec file not found: {path}")
    if not path.is_file():
        raise fail(f"not a file: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise fail(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise fail(f"{path} must hold a JSON object (a job spec), not {type(data).__name__}")
    return data
