"""Reading and writing the gate's files: :class:`CheckError` (exit 2) names the file and the problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class CheckError(Exception):
    """Bad usage or unusable input: the gate exits 2 with this message."""


def read_structured(path: Path, what: str) -> Any:
    """JSON (or YAML for .yaml / .yml) from ``path``; :class:`CheckError` naming the problem otherwise."""
    if not path.exists():
        raise CheckError(f"{what} not found: {path}")
    if not path.is_file():
        raise CheckError(f"{what} is not a file: {path}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckError(f"cannot read {what} {path}: {exc}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CheckError(f"{path} is not valid YAML: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckError(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None


def write_file(path: Path, payload: bytes | str, what: str) -> None:
    """Write ``payload`` to ``path`` (parents created); :class:`CheckError` if that fails."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(payload, bytes):
            path.write_bytes(payload)
        else:
            path.write_text(payload)
    except OSError as exc:
        raise CheckError(f"cannot write the {what} {path}: {exc}") from None
