"""Overlaid robustness curves of 2–4 jobs for the web compare page, drawn server-side from stored metrics.

::

    png = compare_plot("gaussian", [("job a", metrics_a), ("job b", metrics_b)])   # bytes, or None: no data

Kinds (:data:`COMPARE_KINDS`, the catalog's kinds with a :class:`~core.metrics.Chart` overlay, which also gives
the titles and axes): ``gaussian`` (accuracy vs noise σ), ``pgd_linf`` / ``pgd_l2`` (accuracy under PGD vs ε, each
curve starting at the job's clean accuracy at ε = 0) and ``certified_l2`` (certified L2 accuracy vs ε); for
regression and denoising jobs ``gaussian_mse`` and ``pgd_linf_mse`` (MSE, log scale).
One colour per job in every figure. Built on :class:`matplotlib.figure.Figure` with the Agg canvas (no pyplot
state: safe in the API's worker threads); the metric series are read with :func:`core.metrics.series`, the same
reader the per-job plots use.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

from core.metrics import CATALOG, MetricKind, series

#: the compare page's overlays, by name (its ``?kind=``): the catalog's kinds with a chart overlay, in its order
COMPARE_KINDS: dict[str, MetricKind] = {k.chart.overlay: k for k in CATALOG.values() if k.chart and k.chart.overlay}
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
COLOURS_HEX = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")  # the same, for the HTML legend
MARKERS = ("o", "s", "^", "D", "v", "P")


def has_data(kind: str, metrics: Sequence[Mapping[str, float]]) -> bool:
    """Whether any of the jobs has a point of this kind of curve."""
    return any(series(m, COMPARE_KINDS[kind].name) for m in metrics)


def compare_plot(kind: str, jobs: Sequence[tuple[str, Mapping[str, float]]]) -> bytes | None:
    """One PNG with a curve per job (``(label, flat metrics)``); ``None`` when no job has a point of ``kind``.

    Raises:
        KeyError: an unknown kind.
    """
    record = COMPARE_KINDS[kind]
    chart = record.chart
    assert chart is not None
    start = chart.start
    curves = [(label, series(metrics, record.name), metrics.get(start) if start else None) for label, metrics in jobs]
    if not any(points for _, points, _ in curves):
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(chart.title, fontsize=11)
    ax.grid(True, alpha=0.3)
    for i, (label, points, clean) in enumerate(curves):
        colour, marker = COLOURS[i % len(COLOURS)], MARKERS[i % len(MARKERS)]
        if not points:
            ax.plot([], [], color=colour, label=f"{label} (not measured)")  # keeps colours aligned with the table
            continue
        xs, ys = [x for x, _ in points], [y for _, y in points]
        if clean is not None and xs[0] > 0:
            xs, ys = [0.0, *xs], [clean, *ys]
        ax.plot(xs, ys, marker=marker, color=colour, label=label)
    ax.set_xlabel(chart.x)
    ax.set_ylabel(chart.y)
    if record.unit == "fraction":
        ax.set_ylim(-0.02, 1.02)
    elif all(y > 0 for _, points, _ in curves for _, y in points):  # errors: a log scale
        ax.set_yscale("log")
    ax.set_xlim(left=0)
    ax.legend(loc="best", fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


__all__ = ["COLOURS", "COLOURS_HEX", "COMPARE_KINDS", "compare_plot", "has_data"]
