"""PNG plots of one job's robustness numbers (matplotlib, Agg canvas, no pyplot state).

Three figures, written by :func:`write_plots` next to ``result.json``:

* ``plot_gaussian.png`` — accuracy vs Gaussian noise σ, mean ± std over the draws (Reshniak & Webster's poster's table
  "Classification accuracy for data corrupted with Gaussian noise", as a curve);
* ``plot_eps.png`` — accuracy vs ε for PGD L∞, PGD L2, AutoAttack (when run) and certified L2 on one axis (clean
  accuracy at ε = 0): the Lipschitz-margin certificate (solid, the network itself) and, when run, randomized
  smoothing's (dashed, one curve per σ, from the smoothed clean accuracy at ε = 0: the smoothed classifier, with
  probability ≥ 1 − α);
* ``plot_radius.png`` — histogram of the per-sample certified L2 radii, the certified ε marked.

Regression and denoising jobs (metrics ``clean_mse`` …) get the same file names with other content:
``plot_gaussian.png`` shows MSE and PSNR vs σ, ``plot_eps.png`` the worst-case MSE found by PGD and the certified
upper bounds vs ε; a plug-and-play evaluation adds ``plot_pnp.png`` (reconstruction and observation PSNR vs σ).

Every function reads flat metrics (``gaussian_acc@0.3`` …) so it works on a ``RunResult`` as well as on the
``metrics`` of a stored ``result.json``::

    from evaluation.plots import write_plots
    write_plots("runs/spirals", result.metrics, title="spirals-implicit", radii=radii)

Figures are built with :class:`matplotlib.figure.Figure` directly (no global backend switch, safe in a worker).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from core.metrics import (
    CATALOG,
    LEVEL_SYMBOLS,
    MORE_COLOURS,
    PLOT_FILE,
    metric_key,
    param_series,
    plot_kinds,
    series,
)

GAUSSIAN_FILE, EPS_FILE, RADIUS_FILE, PNP_FILE = (PLOT_FILE[p] for p in ("gaussian", "eps", "radius", "pnp"))
SWEEP_FILE = "sweep_gaussian.png"
PLOT_FILES = (GAUSSIAN_FILE, EPS_FILE, RADIUS_FILE)
#: the style of a curve whose kind the catalog gives none (each kind's own: :attr:`core.metrics.MetricKind.style`)
OTHER_STYLE = ("tab:gray", "x", ":")


def _figure(title: str, subtitle: str | None = None):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title if subtitle is None else f"{title}\n{subtitle}", fontsize=11)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _save(fig, path: Path) -> Path:
    """Write to a temporary name, then rename: a reader never sees half a PNG."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.tmp")
    fig.savefig(partial, format="png")
    partial.replace(path)
    return path


def plot_gaussian(metrics: Mapping[str, float], path: str | Path, title: str) -> Path | None:
    """Accuracy vs σ with a ±std band; ``None`` (nothing written) when there are no Gaussian metrics."""
    mean = series(metrics, "gaussian_acc")
    if not mean:
        return None
    std = dict(series(metrics, "gaussian_acc_std"))
    sigmas = [s for s, _ in mean]
    acc = [a for _, a in mean]
    err = [std.get(s, 0.0) for s in sigmas]
    fig, ax = _figure(f"Accuracy under Gaussian noise — {title}", "x + σ·N(0, I), mean ± std over draws")
    low = [a - e for a, e in zip(acc, err, strict=True)]
    high = [a + e for a, e in zip(acc, err, strict=True)]
    ax.fill_between(sigmas, low, high, alpha=0.2, color="tab:blue")
    ax.errorbar(sigmas, acc, yerr=err, marker="o", capsize=3, color="tab:blue", label=CATALOG["gaussian_acc"].legend)
    if "clean_acc" in metrics:
        ax.axhline(metrics["clean_acc"], ls="--", color="grey", lw=1, label=f"clean {metrics['clean_acc']:.3f}")
    ax.set_xlabel("noise standard deviation σ (input units)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="lower left", fontsize=9)
    return _save(fig, Path(path))


def _band(ax, xs, mean, err, colour: str, label: str, marker: str = "o") -> None:
    low = [m - e for m, e in zip(mean, err, strict=True)]
    high = [m + e for m, e in zip(mean, err, strict=True)]
    ax.fill_between(xs, low, high, alpha=0.2, color=colour)
    ax.errorbar(xs, mean, yerr=err, marker=marker, capsize=3, color=colour, label=label)


def plot_gaussian_regression(metrics: Mapping[str, float], path: str | Path, title: str) -> Path | None:
    """MSE (left, log scale) and PSNR (right) vs σ, mean ± std over draws, the clean values dashed and, for a
    denoiser, the PSNR of the noisy inputs themselves; ``None`` when there are no ``gaussian_mse`` metrics."""
    mse = series(metrics, "gaussian_mse")
    if not mse:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.6, 4.4), dpi=110, layout="constrained")
    fig.suptitle(f"Error under Gaussian noise — {title}\nx + σ·N(0, I), mean ± std over draws", fontsize=11)
    left, right = fig.subplots(1, 2)
    sigmas = [s for s, _ in mse]
    mse_std = dict(series(metrics, "gaussian_mse_std"))
    _band(
        left,
        sigmas,
        [v for _, v in mse],
        [mse_std.get(s, 0.0) for s in sigmas],
        "tab:red",
        CATALOG["gaussian_mse"].legend,
    )
    if "clean_mse" in metrics:
        left.axhline(metrics["clean_mse"], ls="--", color="grey", lw=1, label=f"clean {metrics['clean_mse']:.3g}")
    if all(v > 0 for _, v in mse):
        left.set_yscale("log")
    left.set_ylabel("mean squared error")
    psnr = series(metrics, "gaussian_psnr")
    psnr_std = dict(series(metrics, "gaussian_psnr_std"))
    if psnr:
        xs = [s for s, _ in psnr]
        _band(
            right,
            xs,
            [v for _, v in psnr],
            [psnr_std.get(s, 0.0) for s in xs],
            "tab:blue",
            CATALOG["gaussian_psnr"].legend,
        )
    baseline = series(metrics, "gaussian_input_psnr")
    if baseline:
        right.plot(
            [s for s, _ in baseline],
            [v for _, v in baseline],
            ls=":",
            marker="x",
            color="black",
            label=CATALOG["gaussian_input_psnr"].legend,
        )
    if "clean_psnr" in metrics:
        right.axhline(metrics["clean_psnr"], ls="--", color="grey", lw=1, label=f"clean {metrics['clean_psnr']:.2f} dB")
    right.set_ylabel("PSNR (dB)")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("noise standard deviation σ (input units)")
        ax.legend(loc="best", fontsize=8)
    return _save(fig, Path(path))


Curve = tuple[str, str, tuple[str, str, str], list[tuple[float, float]], float | None]


def _present(metrics: Mapping[str, float], plot: str, task: str, clean: float | None = None) -> list[Curve]:
    """The curves of each kind the catalog draws on ``plot`` for ``task`` that was measured, in catalog order:
    ``(kind, legend, (colour, marker, line), (level, value) points, value at level 0)``; a kind with a second
    level (σ) gives one curve per σ, starting from its chart's ``start`` metric at that σ (smoothing: PREDICT's
    clean accuracy)."""
    curves: list[Curve] = []
    for kind in plot_kinds(plot, task):
        style = kind.style or OTHER_STYLE
        if kind.param is None:
            points = series(metrics, kind.name)
            if points:
                curves.append((kind.name, kind.legend, style, points, clean))
            continue
        for i, (param, points) in enumerate(param_series(metrics, kind.name).items()):
            colour = style[0] if i == 0 else MORE_COLOURS[(i - 1) % len(MORE_COLOURS)]
            start = kind.chart.start if kind.chart else None
            zero = metrics.get(metric_key(start, float(param))) if start else None
            legend = f"{kind.legend}, {LEVEL_SYMBOLS[kind.param]}={param}"
            curves.append((kind.name, legend, (colour, style[1], style[2]), points, zero))
    return curves


def _curves_from_clean(ax, curves: list[Curve]) -> None:
    """One line per curve against ε with its style and legend; each starts at its value at ε = 0 when there is
    one (the clean value)."""
    for _kind, legend, (colour, marker, line), points, zero in curves:
        xs, ys = [e for e, _ in points], [v for _, v in points]
        if zero is not None:
            xs, ys = [0.0, *xs], [zero, *ys]
        ax.plot(xs, ys, marker=marker, color=colour, ls=line, label=legend)


def plot_eps_regression(
    metrics: Mapping[str, float], path: str | Path, title: str, settings: str | None = None
) -> Path | None:
    """Worst-case MSE vs ε: PGD (found by the attack, from below) and the certified bounds (from above), log scale,
    clean MSE at ε = 0; ``None`` when none of them was measured."""
    clean = metrics.get("clean_mse")
    present = _present(metrics, "eps", "regression", clean)
    if not present:
        return None
    fig, ax = _figure(f"Worst-case MSE vs ε — {title}", settings)
    _curves_from_clean(ax, present)
    if clean is not None:
        ax.axhline(clean, ls=":", color="grey", lw=1, label=f"clean {clean:.3g}")
    values = [v for curve in present for _, v in curve[3]] + ([clean] if clean else [])
    if values and all(v > 0 for v in values):
        ax.set_yscale("log")
    ax.set_xlabel("perturbation budget ε (input units; L∞ and L2 share the axis)")
    ax.set_ylabel("mean squared error")
    ax.set_xlim(left=0)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, Path(path))


def plot_pnp(metrics: Mapping[str, float], path: str | Path, title: str) -> Path | None:
    """Plug-and-play reconstruction PSNR and the degraded observation's PSNR vs σ; ``None`` without them."""
    recon = series(metrics, "pnp_psnr")
    if not recon:
        return None
    observed = series(metrics, "pnp_input_psnr")
    monotone = dict(series(metrics, "pnp_monotone"))
    averaged = metrics.get("pnp_averaged")
    subtitle = "x ← D_λ(x − α·Kᵀ(Kx − y)), y = Kx + σ·N(0, I)"
    notes = []
    if averaged is not None:
        notes.append(f"averaged iteration: {'yes' if averaged >= 1 else 'not guaranteed'}")
    if monotone:
        notes.append(f"non-increasing steps on ≥ {min(monotone.values()):.0%} of images")
    if notes:
        subtitle += "\n" + "; ".join(notes)
    fig, ax = _figure(f"Plug-and-play reconstruction — {title}", subtitle)
    ax.plot(
        [s for s, _ in recon], [v for _, v in recon], marker="o", color="tab:green", label=CATALOG["pnp_psnr"].legend
    )
    if observed:
        ax.plot(
            [s for s, _ in observed],
            [v for _, v in observed],
            marker="x",
            ls=":",
            color="black",
            label=CATALOG["pnp_input_psnr"].legend,
        )
    ax.set_xlabel("measurement noise σ")
    ax.set_ylabel("PSNR (dB)")
    ax.legend(loc="best", fontsize=8)
    return _save(fig, Path(path))


def plot_eps(metrics: Mapping[str, float], path: str | Path, title: str, settings: str | None = None) -> Path | None:
    """PGD, AutoAttack and certified L2 accuracy vs ε on one axis (the kinds the catalog draws on the ε plot, those
    measured: the Lipschitz certificate and, one per σ, randomized smoothing's); ``None`` when none of them was
    measured."""
    clean = metrics.get("clean_acc")
    present = _present(metrics, "eps", "classification", clean)
    if not present:
        return None
    fig, ax = _figure(f"Robust accuracy vs ε — {title}", settings)
    _curves_from_clean(ax, present)
    if clean is not None:
        ax.axhline(clean, ls="--", color="grey", lw=1, label=f"clean {clean:.3f}")
    ax.set_xlabel("perturbation budget ε (input units; L∞ and L2 share the axis)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(left=0)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, Path(path))


def plot_radius(
    radii: Sequence[float], path: str | Path, title: str, eps: Sequence[float] = (), method: str | None = None
) -> Path | None:
    """Histogram of certified L2 radii (0 = misclassified or no margin), certified ε as vertical lines."""
    import numpy as np

    r = np.asarray(radii, dtype=np.float64).ravel()
    if r.size == 0:
        return None
    zero = int((r <= 0).sum())
    subtitle = f"{r.size} test samples; {zero} with radius 0 (misclassified or no margin)"
    subtitle += f"\nmedian {np.median(r):.3g}, max {r.max():.3g}"
    if method:
        subtitle += f"; Lipschitz-margin certificate ({method})"
    fig, ax = _figure(f"Certified L2 radius — {title}", subtitle)
    top = float(r.max()) if r.max() > 0 else 1.0
    top = max(top, *eps) if eps else top
    bins = np.linspace(0.0, top * 1.02, 31)
    ax.hist(r, bins=bins, color="tab:green", alpha=0.75, edgecolor="white")
    for i, e in enumerate(sorted(eps)):
        share = float((r > e).mean())
        ax.axvline(e, ls="--", color="black", lw=1)
        right_half = e > 0.6 * top  # label on the line's left near the right edge, so it stays inside the axes
        ax.annotate(
            f"ε={e:g}: {share:.0%} certified",
            xy=(e, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(-4 if right_half else 4, -14 - 13 * i),
            textcoords="offset points",
            ha="right" if right_half else "left",
            fontsize=8,
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8},
        )
    ax.set_xlabel("certified L2 radius (input units); dashed: certified ε")
    ax.set_ylabel("number of test samples")
    return _save(fig, Path(path))


def write_plots(
    out_dir: str | Path,
    metrics: Mapping[str, float],
    title: str,
    radii: Sequence[float] | None = None,
    certified_eps: Sequence[float] = (),
    eps_settings: str | None = None,
    radius_method: str | None = None,
) -> list[str]:
    """Write every plot the metrics support into ``out_dir``; returns the file names written. Regression and
    denoising metrics (``clean_mse`` …) get the MSE/PSNR versions of the plots."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if "clean_mse" in metrics:
        written = [
            plot_gaussian_regression(metrics, out / GAUSSIAN_FILE, title),
            plot_eps_regression(metrics, out / EPS_FILE, title, eps_settings),
            plot_pnp(metrics, out / PNP_FILE, title),
        ]
        return [p.name for p in written if p is not None]
    written = [
        plot_gaussian(metrics, out / GAUSSIAN_FILE, title),
        plot_eps(metrics, out / EPS_FILE, title, eps_settings),
        None if radii is None else plot_radius(radii, out / RADIUS_FILE, title, certified_eps, radius_method),
    ]
    return [p.name for p in written if p is not None]


def plot_sweep_gaussian(
    curves: Mapping[str, Mapping[float, float]],
    path: str | Path,
    title: str,
    reference: Mapping[str, Mapping[float, float]] | None = None,
    reference_label: str = "RW poster",
    kind: str = "gaussian_acc",
) -> Path | None:
    """One accuracy-vs-σ curve per sweep point (solid) and, optionally, reference curves (dashed, same colour
    when the label matches). ``curves``: label → {σ: accuracy in [0, 1]}. For regression and denoising sweeps
    ``kind`` = ``gaussian_psnr`` (PSNR in dB) or ``gaussian_mse`` (MSE, log scale) and ``curves`` hold those."""
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    from matplotlib import colormaps

    record = CATALOG.get(kind)
    chart = (record.chart if record else None) or CATALOG["gaussian_acc"].chart
    assert chart is not None  # the catalog's Gaussian kinds have charts
    subtitle = "solid: this run; dashed: reference" if kind == "gaussian_acc" or reference else "mean over draws"
    fig, ax = _figure(f"{chart.title} — {title}", subtitle)
    cmap = colormaps["viridis"]
    labels = list(dict.fromkeys([*curves, *(reference or {})]))
    colour = {lab: cmap(i / max(1, len(labels) - 1)) for i, lab in enumerate(labels)}
    for lab, points in curves.items():
        xs = sorted(points)
        ax.plot(xs, [points[x] for x in xs], marker="o", color=colour[lab], label=lab)
    for lab, points in (reference or {}).items():
        xs = sorted(points)
        ax.plot(xs, [points[x] for x in xs], ls="--", marker="x", color=colour[lab], label=f"{lab} ({reference_label})")
    ax.set_xlabel(chart.x)
    ax.set_ylabel(chart.y)
    if kind == "gaussian_acc":
        ax.set_ylim(-0.02, 1.02)
    elif kind == "gaussian_mse" and all(v > 0 for points in curves.values() for v in points.values()):
        ax.set_yscale("log")
    loc = "lower left" if kind == "gaussian_acc" else "best"
    ax.legend(loc=loc, fontsize=7, ncol=2 if len(labels) > 3 else 1)
    return _save(fig, Path(path))


def radius_quantiles(radii: Sequence[float], levels: int = 21) -> list[float]:
    """``levels`` evenly spaced quantiles (0 … 1) of the radii, rounded to 6 significant digits: a compact
    description of the distribution for ``result.json``."""
    import numpy as np

    r = np.asarray(radii, dtype=np.float64).ravel()
    if r.size == 0:
        return []
    q = np.quantile(r, np.linspace(0.0, 1.0, levels))
    return [float(f"{v:.6g}") if math.isfinite(v) else float(v) for v in q]


__all__ = [
    "EPS_FILE",
    "GAUSSIAN_FILE",
    "PLOT_FILES",
    "PNP_FILE",
    "RADIUS_FILE",
    "plot_eps",
    "plot_eps_regression",
    "plot_gaussian",
    "plot_gaussian_regression",
    "plot_pnp",
    "plot_radius",
    "plot_sweep_gaussian",
    "radius_quantiles",
    "series",
    "write_plots",
]
