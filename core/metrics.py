"""Which metrics summarise a task: the one list the sweep table, the sweep plot and the leaderboard entries share.

Metric names are flat (``kind@level``, see :mod:`evaluation.runner`); a *kind* is the part before ``@``::

    from core.metrics import summary_columns, gaussian_kind
    summary_columns(metrics_of_every_point)   # ["clean_mse", "clean_psnr", "gaussian_psnr@0.1", …, "pgd_l2_mse@0.1"]
    gaussian_kind(metrics_of_every_point)     # "gaussian_acc" | "gaussian_psnr" | "gaussian_mse" | None

Classification is summarised by accuracies (clean, Gaussian per σ, PGD L∞ / L2 and certified L2 per ε);
regression and denoising by clean MSE and PSNR, Gaussian PSNR per σ (MSE where no PSNR was measured), the worst
MSE PGD finds per ε (a lower bound on the worst case) and the certified MSE bound per ε (an upper bound).
Torch-free: the API imports it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

#: kinds without a level, in table order
CLASSIFICATION_CLEAN = ("clean_acc",)
REGRESSION_CLEAN = ("clean_mse", "clean_psnr")
#: kinds measured per level (σ or ε), in table order
CLASSIFICATION_LEVELS = (
    "gaussian_acc", "pgd_linf_acc", "pgd_l2_acc", "autoattack_linf_acc", "autoattack_l2_acc", "certified_l2_acc",
)  # fmt: skip
REGRESSION_LEVELS = (
    "gaussian_psnr", "gaussian_mse", "pgd_linf_mse", "pgd_l2_mse", "certified_linf_mse", "certified_l2_mse",
)  # fmt: skip
#: the Gaussian-noise kind a summary shows, first present wins (accuracy; else PSNR; else MSE)
GAUSSIAN_KINDS = ("gaussian_acc", "gaussian_psnr", "gaussian_mse")

SUMMARY_KINDS: dict[str, tuple[str, ...]] = {
    "classification": CLASSIFICATION_CLEAN + CLASSIFICATION_LEVELS,
    "regression": REGRESSION_CLEAN + REGRESSION_LEVELS,
    "denoising": REGRESSION_CLEAN + REGRESSION_LEVELS,
}
#: every kind that is measured per level, for grouping ``kind@level`` into ``{level: value}``
LEVEL_KINDS = CLASSIFICATION_LEVELS + REGRESSION_LEVELS
SCALAR_KINDS = CLASSIFICATION_CLEAN + REGRESSION_CLEAN


def kind_of(name: str) -> str:
    return name.partition("@")[0]


def level_of(name: str) -> float:
    """The level of ``kind@level`` (``inf`` when there is none or it is not a number)."""
    try:
        return float(name.partition("@")[2])
    except ValueError:
        return math.inf


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
        kind, at, level = name.partition("@")
        if at and kind in wanted:
            grouped.setdefault(kind, {})[level] = value
    return grouped


__all__ = [
    "LEVEL_KINDS",
    "SCALAR_KINDS",
    "SUMMARY_KINDS",
    "gaussian_kind",
    "group_levels",
    "kind_of",
    "level_of",
    "summary_columns",
    "summary_kinds",
]
