"""Parameter sweeps: one base spec, a grid over dotted paths, one job per grid point, one comparison.

A grid comes from ``--set PATH=V1,V2,…`` options or from a top-level ``"sweep"`` object in the spec file (stripped
before validation, so the rest is an ordinary job spec)::

    {"name": "spirals-theta-sweep", …, "sweep": {"model.theta": [0, 0.25, 0.5, 0.75, 1]}}

    from evaluation.sweep import split_sweep, expand_grid
    base, axes = split_sweep(json.load(open("examples/spirals-theta-sweep.json")))
    points = expand_grid(base, axes)               # validated JobSpecs, named <base>-theta=0.25 …
    # cli/sweep.py runs the points (in-process or on a server: cli/backend.py) into PointOutcomes

Axes are crossed (a Cartesian product), the first axis varying slowest. A sweep's numbers beside Reshniak &
Webster's poster (its Gaussian-noise table, the θ trend): :mod:`evaluation.poster`.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from core.spec import JobSpec

SWEEP_KEY = "sweep"
MAX_POINTS = 256


class SweepError(ValueError):
    """A malformed ``--set`` option or ``sweep`` object, or a grid point that is not a valid job spec."""


# ---------------------------------------------------------------------------------------------------- grid
def parse_value(text: str) -> Any:
    """One grid value: JSON when it parses (numbers, true/false, null, quoted strings, objects), else the bare
    string (``--set model.activation=tanh,relu``)."""
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def split_values(text: str) -> list[str]:
    """Split ``V1,V2,…`` on the commas that are not inside brackets, braces or quotes."""
    parts, depth, quote, start = [], 0, False, 0
    for i, ch in enumerate(text):
        if ch == '"' and (i == 0 or text[i - 1] != "\\"):
            quote = not quote
        elif not quote and ch in "[{":
            depth += 1
        elif not quote and ch in "]}":
            depth -= 1
        elif not quote and depth == 0 and ch == ",":
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_set(option: str) -> tuple[str, list[Any]]:
    """``"model.theta=0,0.5,1"`` → ``("model.theta", [0, 0.5, 1])``.

    Raises:
        SweepError: no ``=``, an empty path or an empty value.
    """
    path, sep, values = option.partition("=")
    path = path.strip()
    if not sep or not path:
        raise SweepError(f"--set {option!r}: expected PATH=V1,V2,… (e.g. model.theta=0,0.5,1)")
    _check_path(path)
    items = split_values(values)
    if any(not item.strip() for item in items):
        raise SweepError(f"--set {option!r}: empty value (write the values separated by commas)")
    return path, [parse_value(item) for item in items]


def _check_path(path: str) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", path):
        raise SweepError(f"sweep path {path!r}: expected dotted field names such as model.theta")
    if path == SWEEP_KEY or path == "name":
        raise SweepError(f"sweep path {path!r} cannot be swept (the points are named after the grid)")


def split_sweep(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The spec without its top-level ``"sweep"`` object, and that object as ``{path: [values]}``.

    Raises:
        SweepError: ``sweep`` is not an object of non-empty lists.
    """
    base = {k: copy.deepcopy(v) for k, v in data.items() if k != SWEEP_KEY}
    raw = data.get(SWEEP_KEY)
    if raw is None:
        return base, {}
    if not isinstance(raw, Mapping):
        raise SweepError(f'"{SWEEP_KEY}" must be an object {{"model.theta": [0, 0.5, 1], …}}')
    axes: dict[str, list[Any]] = {}
    for path, values in raw.items():
        _check_path(path)
        if not isinstance(values, list) or not values:
            raise SweepError(f'"{SWEEP_KEY}.{path}" must be a non-empty list of values')
        axes[path] = list(values)
    return base, axes


def merge_axes(*grids: Mapping[str, list[Any]]) -> dict[str, list[Any]]:
    """Later grids replace earlier ones path by path (``--set`` overrides the file's ``sweep``)."""
    merged: dict[str, list[Any]] = {}
    for grid in grids:
        merged.update({k: list(v) for k, v in grid.items()})
    return merged


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """``data[a][b][c] = value`` for ``"a.b.c"``, creating (or replacing a ``null`` with) intermediate objects,
    so ``train.regularizers.stochastic.sigma`` works on a spec without a stochastic regularizer."""
    keys = path.split(".")
    node = data
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            where = ".".join(keys[: i + 1])
            raise SweepError(f"sweep path {path!r}: {where} is {type(child).__name__}, not an object")
        node = child
    node[keys[-1]] = copy.deepcopy(value)


def format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (int, str)):
        return str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def axis_labels(paths: Sequence[str]) -> dict[str, str]:
    """Short column labels: the last path component, or more of the path where two would clash."""
    labels = {}
    for path in paths:
        parts = path.split(".")
        for n in range(1, len(parts) + 1):
            label = ".".join(parts[-n:])
            if sum(1 for p in paths if p == label or p.endswith("." + label)) == 1:
                break
        labels[path] = label
    return labels


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ())) or "(spec)"
        got = error.get("input")
        shown = "" if error.get("type") == "missing" or isinstance(got, (dict, list)) else f" (got {got!r})"
        lines.append(f"  {where}: {error.get('msg', 'invalid')}{shown}")
    return "\n".join(lines)


def _name_token(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@+=-]+", "_", text).strip("_") or "x"


@dataclass
class SweepPoint:
    """One grid point: its values (``{path: value}``), its validated spec and the raw spec dict."""

    index: int
    params: dict[str, Any]
    spec: JobSpec
    data: dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def label(self, labels: Mapping[str, str] | None = None) -> str:
        labels = labels or axis_labels(list(self.params))
        return " ".join(f"{labels[p]}={format_value(v)}" for p, v in self.params.items()) or "base"


def expand_grid(base: Mapping[str, Any], axes: Mapping[str, list[Any]]) -> list[SweepPoint]:
    """Every combination of the axes applied to ``base``, validated as a :class:`JobSpec` and named
    ``<base name>-<label>=<value>…``. No axes: the base spec alone.

    Raises:
        SweepError: too many points, or a point that is not a valid spec (the message names the point).
    """
    paths = list(axes)
    combos = list(itertools.product(*(axes[p] for p in paths)))
    if len(combos) > MAX_POINTS:
        raise SweepError(f"the grid has {len(combos)} points; at most {MAX_POINTS} are allowed")
    labels = axis_labels(paths)
    base_name = str(base.get("name", "sweep"))
    points = []
    for index, combo in enumerate(combos):
        params = dict(zip(paths, combo, strict=True))
        data = copy.deepcopy(dict(base))
        for path, value in params.items():
            set_path(data, path, value)
        suffix = "-".join(_name_token(f"{labels[p]}={format_value(v)}") for p, v in params.items())
        data["name"] = f"{base_name}-{suffix}"[:200] if suffix else base_name
        try:
            spec = JobSpec.model_validate(data)
        except ValidationError as exc:  # say which point, and which fields
            where = ", ".join(f"{p}={format_value(v)}" for p, v in params.items()) or "the base spec"
            raise SweepError(f"grid point {where} is not a valid job spec:\n{_format_errors(exc)}") from None
        points.append(SweepPoint(index, params, spec, data))
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise SweepError("two grid points got the same name (repeated values on an axis?)")
    return points


# ---------------------------------------------------------------------------------------------------- running
@dataclass
class PointOutcome:
    """What one grid point produced: metrics on success, an error message otherwise."""

    point: SweepPoint
    status: str  # "succeeded" | "failed" | "cancelled"
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    out_dir: str | None = None
    job_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


# ---------------------------------------------------------------------------------------------------- summary
def summary(outcomes: Sequence[PointOutcome]) -> dict[str, Any]:
    """A JSON-able record of the sweep (``sweep.json``): grid values, status and metrics of every point."""
    return {
        "points": [
            {
                "name": o.point.name,
                "params": o.point.params,
                "status": o.status,
                "error": o.error,
                "job_id": o.job_id,
                "out_dir": o.out_dir,
                "metrics": o.metrics,
            }
            for o in outcomes
        ]
    }


__all__ = [
    "SWEEP_KEY",
    "PointOutcome",
    "SweepError",
    "SweepPoint",
    "axis_labels",
    "expand_grid",
    "merge_axes",
    "parse_set",
    "split_sweep",
    "summary",
]
