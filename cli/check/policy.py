"""The gate's policy: which metrics, which bounds, which way is better, the family-wise error rate ``alpha``.

``--max-drop METRIC=TOL`` (``TOL`` absolute, or ``5%`` of the baseline value), ``--min METRIC=FLOOR``,
``--max METRIC=CEILING``, or ``--policy FILE`` (JSON / YAML: ``{"max_drop": {...}, "min": {...}, "max": {...},
"direction": {...}, "alpha": 0.05}``). ``METRIC`` may be a glob (``pgd_*``). Whether a "drop" is a fall or a rise
comes from the metric catalog, :mod:`core.metrics` (accuracies: higher is better; spreads, errors,
``lipschitz_bound``, losses, ``*_seconds``: lower). ``k`` / ``baseline_spread`` select the older heuristic rule (tol +
k·SE, no stated error rate).
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cli.check.files import CheckError, read_structured
from cli.client import format_validation_errors
from core import metrics

HIGHER, LOWER = "higher", "lower"
Direction = Literal["higher", "lower"]
RuleKind = Literal["max_drop", "min", "max"]
BaselineSpread = Literal["zero", "candidate"]
DEFAULT_ALPHA = 0.05

def metric_direction(name: str, overrides: Mapping[str, Direction] | None = None) -> Direction | None:
    """``"higher"`` or ``"lower"`` (is better) for a flat metric name, from the metric catalog
    (:mod:`core.metrics`, which the web leaderboard's order also reads), or ``None`` for a kind it does not know.

    ``overrides`` (a policy file's ``direction``) maps names or globs to a direction and wins over the table."""
    for pattern, direction in (overrides or {}).items():
        if fnmatch.fnmatchcase(name, pattern):
            return direction
    return metrics.direction(name)


_METRIC_RE = re.compile(metrics.GLOB_PATTERN)  # a metric name or a glob of them (core.metrics)
OPTION_OF = {"max_drop": "--max-drop", "min": "--min", "max": "--max"}


@dataclass(frozen=True)
class Rule:
    """One bound on one metric (or a glob of metrics): ``max_drop`` relative to the baseline, or an absolute
    ``min`` (floor) / ``max`` (ceiling) on the candidate."""

    kind: RuleKind
    metric: str
    value: float
    relative: bool = False  # max_drop given as "5%": value is a fraction of |baseline|

    @property
    def is_pattern(self) -> bool:
        return any(c in self.metric for c in "*?[")

    def __str__(self) -> str:
        shown = f"{self.value * 100:g}%" if self.relative else f"{self.value:g}"
        return f"{OPTION_OF[self.kind]} {self.metric}={shown}"


def parse_rule(kind: RuleKind, text: str) -> Rule:
    """``"pgd_linf_acc@0.1=0.02"`` → ``Rule("max_drop", "pgd_linf_acc@0.1", 0.02)``; ``"clean_acc=5%"`` is relative.

    Raises:
        CheckError: not ``METRIC=NUMBER``, a malformed metric name, a negative or non-finite tolerance.
    """
    option = OPTION_OF[kind]
    metric, sep, raw = text.partition("=")
    metric, raw = metric.strip(), raw.strip()
    if not sep or not metric or not raw:
        raise CheckError(f"{option} expects METRIC=VALUE (e.g. {option} pgd_linf_acc@0.1=0.02), got {text!r}")
    return _make_rule(kind, metric, raw, f"{option} {text!r}")


def _make_rule(kind: RuleKind, metric: str, raw: str | float, where: str) -> Rule:
    if not _METRIC_RE.match(metric):
        raise CheckError(f"{where}: {metric!r} is not a metric name (e.g. clean_acc, pgd_linf_acc@0.1, pgd_*)")
    relative = isinstance(raw, str) and raw.endswith("%")
    if relative and kind != "max_drop":
        raise CheckError(f"{where}: a percentage applies to --max-drop only (floors and ceilings are absolute)")
    number = raw[:-1] if relative else raw
    try:
        value = float(number)
    except (TypeError, ValueError):
        raise CheckError(f"{where}: {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise CheckError(f"{where}: the value must be finite, got {raw!r}")
    if kind == "max_drop" and value < 0:
        raise CheckError(f"{where}: a tolerance must be ≥ 0, got {raw!r}")
    return Rule(kind, metric, value / 100 if relative else value, relative)


class PolicyFile(BaseModel):
    """``--policy FILE`` (JSON or YAML)."""

    model_config = ConfigDict(extra="forbid")

    max_drop: dict[str, float | str] = Field(default_factory=dict, description="metric → tolerance (or 'N%')")
    min: dict[str, float] = Field(default_factory=dict, description="metric → absolute floor")
    max: dict[str, float] = Field(default_factory=dict, description="metric → absolute ceiling")
    direction: dict[str, Direction] = Field(default_factory=dict, description="metric → higher / lower is better")
    alpha: float | None = Field(None, gt=0, lt=1, description="family-wise false-alarm rate (default 0.05)")
    k: float | None = Field(None, ge=0, le=100, description="legacy heuristic: noise multiplier")
    baseline_spread: BaselineSpread | None = Field(None, description="legacy heuristic: one-run baseline's spread")


@dataclass
class Policy:
    """``alpha``: the family-wise false-alarm rate of the statistical rule (Holm over every tested bound).

    ``k`` (None by default) selects the legacy heuristic instead: a drop fails when it exceeds tol + k·SE, with
    ``baseline_spread`` saying what a one-run baseline's spread is taken to be (``"zero"``: k·s/√N;
    ``"candidate"``: k·s·√(1/N + 1)). It has no stated error rate; it is kept for existing policies."""

    rules: list[Rule]
    directions: dict[str, Direction] = field(default_factory=dict)
    k: float | None = None
    baseline_spread: BaselineSpread = "zero"
    alpha: float = DEFAULT_ALPHA
    notes: list[str] = field(default_factory=list)

    @property
    def legacy(self) -> bool:
        return self.k is not None


def check_alpha(alpha: float, where: str = "--alpha") -> float:
    """``alpha`` if it is in (0, 1); :class:`CheckError` otherwise."""
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and 0 < alpha < 1):
        raise CheckError(f"{where} must be in (0, 1) (a false-alarm probability, e.g. 0.05), got {alpha!r}")
    return float(alpha)


def load_policy_file(path: Path) -> PolicyFile:
    data = read_structured(path, "policy file")
    try:
        return PolicyFile.model_validate(data)
    except ValidationError as exc:
        raise CheckError(f"invalid policy file {path}:\n{format_validation_errors(exc.errors())}") from None


def build_policy(
    policy_file: Path | None,
    max_drop: Sequence[str] = (),
    mins: Sequence[str] = (),
    maxs: Sequence[str] = (),
    k: float | None = None,
    baseline_spread: BaselineSpread | None = None,
    alpha: float | None = None,
) -> Policy:
    """The policy file's rules, then the command line's (which replace a file rule for the same kind and metric)."""
    if alpha is not None:
        check_alpha(alpha)
    rules: dict[tuple[str, str], Rule] = {}
    directions: dict[str, Direction] = {}
    file_k = file_spread = file_alpha = None
    if policy_file is not None:
        spec = load_policy_file(policy_file)
        for kind in ("max_drop", "min", "max"):
            for metric, raw in getattr(spec, kind).items():
                rule = _make_rule(kind, metric, raw, f"{policy_file}: {kind}.{metric}")
                rules[(kind, metric)] = rule
        directions, file_k = dict(spec.direction), spec.k
        file_spread, file_alpha = spec.baseline_spread, spec.alpha
    for kind, texts in (("max_drop", max_drop), ("min", mins), ("max", maxs)):
        for text in texts:
            rule = parse_rule(kind, text)
            rules[(kind, rule.metric)] = rule
    if not rules:
        raise CheckError(
            "no policy: give --max-drop METRIC=TOL (e.g. --max-drop clean_acc=0.01), --min / --max, or --policy FILE"
        )
    k = k if k is not None else file_k
    spread = baseline_spread or file_spread
    alpha = alpha if alpha is not None else (file_alpha if file_alpha is not None else DEFAULT_ALPHA)
    notes = []
    if spread is not None and k is None:
        notes.append(
            f"baseline_spread {spread!r} is ignored: it belongs to the legacy rule (give --k for that); the "
            "statistical rule estimates the spread from the runs (a one-run side is assumed to vary as the other)"
        )
    return Policy(list(rules.values()), directions, k, spread or "zero", alpha, notes)
