"""The metric catalog (its records are in :mod:`core.metric_kinds`), and the one place that parses and formats
``kind@level``.

Metric names are flat: a *kind* (``pgd_linf_acc``), optionally ``@`` and a *level* (``pgd_linf_acc@0.1``: ε = 0.1).
A kind measured at two levels (randomized smoothing: noise σ and radius ε) carries the first in its name, as
``_sigma<σ>`` (its record's ``param``): ``smoothed_certified_l2_acc_sigma0.25@0.5`` is the smoothed classifier of
σ = 0.25 certified at ε = 0.5, one curve per σ. :func:`metric_key` writes every name and :func:`parse` (with
:func:`split`, :func:`base_kind`) reads it back, here only; :data:`NAME_PATTERN` is the grammar the API checks.
Everything that shows, sorts, plots, gates or exports a metric reads its facts here::

    from core import metrics
    metrics.direction("gaussian_acc_std@0.3")     # "lower": a spread, not an accuracy
    metrics.label("pgd_linf_acc@0.1")             # "PGD L∞ ε=0.1"
    metrics.format_value("clean_acc", 0.93)       # "93.0 %"
    sorted(names, key=metrics.sort_key)           # clean, Gaussian, attacks, certificates, … by level
    metrics.summary_columns(runs, task)           # the columns a sweep table or leaderboard entry shows

Classification is summarised by accuracies (clean, Gaussian per σ, the best-known robust accuracy — the headline,
per sample the minimum over every attack — and each attack's own per ε, certified L2 per ε);
regression and denoising by clean MSE and PSNR, Gaussian PSNR per σ (MSE where no PSNR was measured), the worst MSE
PGD finds per ε (a lower bound on the worst case) and the certified MSE bound per ε (an upper bound).
Torch-free: every layer imports it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from core.metric_kinds import (  # noqa: F401  (the catalog is read through this module)
    CATALOG,
    CLASSIFICATION,
    EVERY_TASK,
    GAUSSIAN_KINDS,
    GLOB_PATTERN,
    LEVEL_KINDS,
    LEVEL_SYMBOLS,
    LIPSCHITZ_NOTE,
    MORE_COLOURS,
    NAME_PATTERN,
    NUMBER,
    ORDER,
    PARAM_TAGS,
    PLOT_FILE,
    REGRESSION,
    SCALAR_KINDS,
    SIGMA_AXIS,
    SMOOTHING_NOTE,
    SUMMARY_KINDS,
    Chart,
    Direction,
    MetricKind,
    Norm,
    Unit,
)


# ---------------------------------------------------------------------------------------------------- names
def metric_key(kind: str, level: float | None = None, param: float | None = None) -> str:
    """Flat, parseable metric names: ``gaussian_acc@0.3``, ``pgd_linf_acc@0.1``, ``certified_l2_acc@0.05``; with
    ``param`` (a kind whose record has one): ``metric_key("smoothed_certified_l2_acc", 0.5, param=0.25)`` →
    ``smoothed_certified_l2_acc_sigma0.25@0.5``.

    Raises:
        ValueError: ``param`` for a kind that takes none.
    """
    if param is not None:
        record = CATALOG.get(kind)
        if record is None or record.param is None:
            raise ValueError(f"metric kind {kind!r} takes no second level")
        kind = f"{kind}{PARAM_TAGS[record.param]}{param:g}"
    return kind if level is None else f"{kind}@{level:g}"


def split(name: str) -> tuple[str, str]:
    """``"pgd_linf_acc@0.1"`` → ``("pgd_linf_acc", "0.1")``; ``"clean_acc"`` → ``("clean_acc", "")``. The kind keeps
    its second level: ``smoothed_certified_l2_acc_sigma0.25@0.5`` → ``("smoothed_certified_l2_acc_sigma0.25",
    "0.5")`` (one curve, one column group per σ)."""
    kind, _, level = name.partition("@")
    return kind, level


def kind_of(name: str) -> str:
    return split(name)[0]


_PARAM_RE = re.compile(rf"^(?P<base>[A-Za-z0-9_]+?)(?P<tag>{'|'.join(PARAM_TAGS.values())})(?P<value>{NUMBER})$")


def base_kind(kind: str) -> tuple[str, str]:
    """A kind without its second level, and that level as written: ``smoothed_certified_l2_acc_sigma0.25`` →
    ``("smoothed_certified_l2_acc", "0.25")``; a kind without one (or not a catalog kind) → ``(kind, "")``."""
    if kind in CATALOG:
        return kind, ""
    found = _PARAM_RE.match(kind)
    if found is not None:
        record = CATALOG.get(found["base"])
        if record is not None and record.param is not None and PARAM_TAGS[record.param] == found["tag"]:
            try:
                float(found["value"])
            except ValueError:
                return kind, ""
            return found["base"], found["value"]
    return kind, ""


@dataclass(frozen=True)
class Parsed:
    """A metric name read back: its catalog ``base`` kind, the ``param`` (second level) and ``level`` as written
    (``""`` where there is none)."""

    base: str
    param: str
    level: str


def parse(name: str) -> Parsed:
    """``smoothed_certified_l2_acc_sigma0.25@0.5`` → ``Parsed("smoothed_certified_l2_acc", "0.25", "0.5")``;
    ``pgd_linf_acc@0.1`` → ``Parsed("pgd_linf_acc", "", "0.1")``."""
    kind, level = split(name)
    base, param = base_kind(kind)
    return Parsed(base, param, level)


def level_of(name: str) -> float:
    """The level of ``kind@level`` (``inf`` when there is none or it is not a number)."""
    try:
        return float(split(name)[1])
    except ValueError:
        return math.inf


def kind_info(name: str) -> MetricKind | None:
    """The catalog's record of a metric name's kind (``None``: not a kind robustlab reports)."""
    return CATALOG.get(base_kind(kind_of(name))[0])


# ---------------------------------------------------------------------------------------------------- facts
def direction(name: str) -> Direction | None:
    """``"higher"`` or ``"lower"`` (is better) for a metric name; ``None`` for a kind the catalog does not know."""
    kind = kind_info(name)
    return kind.better if kind else None


def default_order(name: str) -> Literal["asc", "desc"]:
    """How a ranking by this metric sorts by default: best first (unknown kinds: highest first)."""
    return "asc" if direction(name) == "lower" else "desc"


def best(name: str, values: Iterable[float]) -> float:
    """The best of ``values`` for this metric (the highest, or the lowest where lower is better)."""
    return min(values) if direction(name) == "lower" else max(values)


def is_fraction(name: str) -> bool:
    """Whether the metric is a fraction in [0, 1] (an accuracy or its spread), shown in percent."""
    kind = kind_info(name)
    return kind is not None and kind.unit == "fraction"


def is_timing(name: str) -> bool:
    """Whether the metric measures time or throughput (``train_seconds``, ``eval_seconds_<evaluation>``,
    ``train_images_per_second``): it differs between two runs of the same job, unlike the results."""
    kind = kind_info(name)
    return kind is not None and kind.unit in ("seconds", "per_second")


def label(name: str, short: bool = False) -> str:
    """``pgd_linf_acc@0.1`` → ``PGD L∞ ε=0.1``, ``gaussian_acc@0.3`` → ``Gauss σ=0.3``,
    ``smoothed_certified_l2_acc_sigma0.25@0.5`` → ``smoothed cert. L2 σ=0.25 ε=0.5``; unknown kinds as written."""
    parsed = parse(name)
    kind, level = CATALOG.get(parsed.base), parsed.level
    if kind is None:
        return name
    text = kind.short if short else kind.label
    if parsed.param and kind.param is not None:
        text = f"{text} {LEVEL_SYMBOLS[kind.param]}={parsed.param}"
    if level and kind.level is not None:
        return f"{text} {LEVEL_SYMBOLS[kind.level]}={level}"
    return f"{text}@{level}" if level else text


def format_value(name: str, value: float | None, unit: bool = True) -> str:
    """Fractions in percent (``93.0 %``; ``93.0`` without ``unit``), decibels and seconds with their unit,
    counts as integers, anything else to 4 significant digits; ``—`` for a missing value."""
    if value is None:
        return "—"
    kind = kind_info(name)
    kind_unit = kind.unit if kind else "number"
    if kind_unit == "fraction":
        return f"{100.0 * value:.1f}" + (" %" if unit else "")
    if kind_unit == "seconds":
        return f"{value:.2f}" + (" s" if unit else "")
    if kind_unit == "per_second":
        return f"{value:.4g}" + (" /s" if unit else "")
    if kind_unit == "dB":
        return f"{value:.2f}" + (" dB" if unit else "")
    if kind_unit == "count" and float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}"


def _number(text: str) -> float:
    try:
        return float(text) if text else -1.0
    except ValueError:
        return math.inf


def sort_key(name: str) -> tuple[int, str, float, float, str]:
    """Orders metric names as tables show them: by the catalog's kind order, then second level (σ), then level;
    unknown kinds last, by name."""
    parsed = parse(name)
    rank = ORDER.get(parsed.base, len(ORDER))
    return rank, parsed.base if rank == len(ORDER) else "", _number(parsed.param), _number(parsed.level), name


def is_column(name: str) -> bool:
    """Whether the web leaderboard shows this metric as a column by default."""
    kind = kind_info(name)
    return kind is not None and kind.column


def threat_model(name: str) -> Norm | None:
    """``"Linf"`` or ``"L2"``: the threat model of an attack's or a certificate's metric (``None`` for others)."""
    kind = kind_info(name)
    return kind.norm if kind else None


def plot_kinds(plot: str, task: str = "classification") -> list[MetricKind]:
    """The kinds a per-job plot draws for a task, in catalog order."""
    return [k for k in CATALOG.values() if k.plot == plot and task in k.tasks]


def notes(names: Iterable[str]) -> list[tuple[str, str]]:
    """``(label, note)`` of each kind among ``names`` that has a note, in catalog order (the job page says with
    them what each certificate holds for)."""
    present = {kind.name for name in names if (kind := kind_info(name)) is not None and kind.note}
    return [(CATALOG[k].label, CATALOG[k].note) for k in CATALOG if k in present]


# ---------------------------------------------------------------------------------------------------- summaries
def summary_kinds(task: str | None = None) -> tuple[str, ...]:
    """The kinds that summarise ``task`` (``None``: every task's, classification first)."""
    if task is None:
        return tuple(dict.fromkeys(k for kinds in SUMMARY_KINDS.values() for k in kinds))
    return SUMMARY_KINDS.get(task, SUMMARY_KINDS["classification"])


def gaussian_kind(metrics_list: Iterable[Mapping[str, float]]) -> str | None:
    """The Gaussian-noise kind to show for these runs: ``gaussian_acc``, else ``gaussian_psnr``, else
    ``gaussian_mse`` (``None``: none measured)."""
    kinds = {kind_of(n) for m in metrics_list for n in m if "@" in n}
    return next((k for k in GAUSSIAN_KINDS if k in kinds), None)


def summary_columns(metrics_list: Iterable[Mapping[str, float]], task: str | None = None) -> list[str]:
    """The summary metrics present in any run, in a fixed order: the clean values, then each kind of
    :func:`summary_kinds` by level. Of the Gaussian kinds only :func:`gaussian_kind`'s is kept, so a regression
    table shows PSNR per σ (MSE where no PSNR was measured) and a classification table stays accuracy only."""
    metrics_list = list(metrics_list)
    names = set().union(*[set(m) for m in metrics_list])
    kinds = summary_kinds(task)
    gaussian = {k for k in GAUSSIAN_KINDS if k != gaussian_kind(metrics_list)}
    columns = [k for k in kinds if k in SCALAR_KINDS and k in names]
    for kind in kinds:
        if kind in SCALAR_KINDS or kind in gaussian:
            continue
        columns += sorted((n for n in names if "@" in n and kind_of(n) == kind), key=level_of)
    return columns


def group_levels(metrics: Mapping[str, float], kinds: Iterable[str] = LEVEL_KINDS) -> dict[str, dict[str, float]]:
    """``{"gaussian_psnr": {"0.1": 21.3, …}, …}`` for the given per-level kinds (each present, levels as written)."""
    wanted = set(kinds)
    grouped: dict[str, dict[str, float]] = {}
    for name, value in metrics.items():
        kind, level = split(name)
        if level and kind in wanted:
            grouped.setdefault(kind, {})[level] = value
    return grouped


def param_series(metrics: Mapping[str, float], base: str) -> dict[str, list[tuple[float, float]]]:
    """``{"0.12": [(ε, value), …], "0.25": […]}``: the :func:`series` of each second level of a kind with one
    (``smoothed_certified_l2_acc``: one curve per σ), by increasing σ."""
    kinds: dict[str, str] = {}
    for name in metrics:
        parsed = parse(name)
        if parsed.base == base and parsed.param and parsed.level:
            kinds[parsed.param] = kind_of(name)
    return {param: series(metrics, kinds[param]) for param in sorted(kinds, key=float)}


def series(metrics: Mapping[str, float], kind: str) -> list[tuple[float, float]]:
    """``[(level, value), …]`` of the metrics named ``<kind>@<level>``, sorted by level."""
    points = []
    for name, value in metrics.items():
        found, level = split(name)
        if level and found == kind:
            try:
                points.append((float(level), float(value)))
            except ValueError:
                continue
    return sorted(points)


__all__ = [
    "CATALOG",
    "Chart",
    "GLOB_PATTERN",
    "MORE_COLOURS",
    "LEVEL_KINDS",
    "NAME_PATTERN",
    "PARAM_TAGS",
    "Parsed",
    "SCALAR_KINDS",
    "SUMMARY_KINDS",
    "PLOT_FILE",
    "MetricKind",
    "base_kind",
    "best",
    "default_order",
    "direction",
    "format_value",
    "gaussian_kind",
    "group_levels",
    "is_column",
    "is_fraction",
    "is_timing",
    "kind_info",
    "kind_of",
    "label",
    "level_of",
    "metric_key",
    "notes",
    "param_series",
    "parse",
    "plot_kinds",
    "series",
    "sort_key",
    "split",
    "summary_columns",
    "summary_kinds",
    "threat_model",
]
