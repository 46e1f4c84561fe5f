"""``robustlab sweep``: run a grid of jobs (in-process, or on a server) and print one comparison table.

::

    robustlab sweep examples/spirals-theta-sweep.json --compare-reshniak-webster
    robustlab sweep examples/spirals-implicit.json --set model.theta=0,0.25,0.5,0.75,1 \\
        --set train.regularizers.stochastic.sigma=0.01,0.05 --out runs/theta --jobs 2
    robustlab sweep examples/spirals-implicit.json --set model.theta=0,1 --server http://127.0.0.1:8000

The grid logic lives in :mod:`evaluation.sweep`; this module parses options, runs or submits the points and
renders the tables. Exit codes: 0 every point succeeded, 1 some point failed, 2 bad input or server errors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.backend import Backend, BackendError, InProcess, JobRun, OnServer
from cli.client import RobustlabClient
from cli.common import console, err_console, fail, read_spec_file
from core import metrics
from evaluation.poster import (
    POSTER_GAUSSIAN,
    gaussian_curve,
    poster_reference,
    spirals_noise_ceiling,
    theta_of,
    trend_check,
)
from evaluation.sweep import (
    PointOutcome,
    SweepError,
    SweepPoint,
    axis_labels,
    expand_grid,
    format_value,
    merge_axes,
    parse_set,
    split_sweep,
    summary,
)

ACCURACY_CAPTION = (
    "accuracy in % (gauss@σ: mean over draws; rob: best known over every attack; pgd, aa: PGD, the attack suite; "
    "cert2: certified L2)"
)
REGRESSION_CAPTION = (
    "MSE (lower is better), PSNR in dB (gauss@σ: mean over draws; pgd: worst MSE the attack found, a lower bound; "
    "cert: certified upper bound on the worst-case MSE)"
)


def format_metric(metric: str, value: float | None) -> str:
    """A cell: the catalog's format without the unit (an accuracy in %, a PSNR in dB with 2 decimals, an MSE or
    other error with 4 significant digits); ``–`` when not measured."""
    return "–" if value is None else metrics.format_value(metric, value, unit=False)


def _pct(value: float | None) -> str:
    return format_metric("gaussian_acc", value)


def column_title(metric: str) -> str:
    """The catalog's short label and the level as written: ``gauss@0.3``, ``pgd∞ MSE@0.1``."""
    kind, level = metrics.split(metric)
    info = metrics.kind_info(kind)
    short = info.short if info else kind
    return f"{short}@{level}" if level else short


def _tasks(columns: Sequence[str]) -> set[str]:
    return {task for c in columns if (info := metrics.kind_info(c)) for task in info.tasks}


def comparison_table(outcomes: Sequence[PointOutcome], title: str) -> Table:
    """One row per point: its grid values, then clean / Gaussian per σ / PGD / certified accuracy (%), or for
    regression and denoising clean MSE and PSNR, Gaussian PSNR (or MSE) per σ, PGD worst MSE and certified MSE
    bound per ε."""
    paths = list(outcomes[0].point.params) if outcomes else []
    labels = axis_labels(paths)
    columns = metrics.summary_columns([o.metrics for o in outcomes if o.ok])
    regression = bool(_tasks(columns) & set(metrics.REGRESSION))
    accuracy = bool(_tasks(columns) & set(metrics.CLASSIFICATION))
    captions = [ACCURACY_CAPTION] if accuracy or not regression else []
    caption = "; ".join(captions + ([REGRESSION_CAPTION] if regression else []))
    table = Table(title=title, caption=caption)
    for path in paths:
        table.add_column(labels[path], justify="right", style="bold")
    for column in columns:
        table.add_column(column_title(column), justify="right")
    table.add_column("status")
    for o in outcomes:
        row = [format_value(o.point.params[p]) for p in paths]
        row += [format_metric(c, o.metrics.get(c)) for c in columns]
        row.append("ok" if o.ok else f"[red]{o.status}[/]: {(o.error or '')[:80]}")
        table.add_row(*row)
    return table


def poster_table(outcomes: Sequence[PointOutcome], ceiling: Mapping[float, float] | None = None) -> Table | None:
    """Rows: noise σ of the table of Reshniak & Webster's poster; for every point whose θ the table has, our Gaussian
    accuracy beside the seed's (both %), after the data's noise ``ceiling`` when given (:func:`shared_noise_ceiling`).
    ``None`` when no point has such a θ."""
    ours = [(o, poster_reference(theta_of(o.point))) for o in outcomes if o.ok]
    ours = [(o, ref) for o, ref in ours if ref is not None]
    if not ours:
        return None
    labels = axis_labels(list(ours[0][0].point.params))
    caption = (
        "RW poster: Reshniak & Webster, poster 'Robust learning with implicit residual networks' "
        "(same σ grid; their data and model, not ours)"
    )
    if ceiling is not None:
        caption += "; nearest arm: the rule that knows the spirals' curves, on our noisy draws (the data's ceiling)"
    table = Table(title="Gaussian-noise accuracy (%): this sweep beside Reshniak & Webster's poster", caption=caption)
    table.add_column("σ", justify="right", style="bold")
    if ceiling is not None:
        table.add_column("nearest\narm", justify="right", style="italic")
    for o, _ in ours:
        table.add_column(f"ours\n{o.point.label(labels)}", justify="right")
        table.add_column(f"RW poster\nθ={format_value(theta_of(o.point))}", justify="right", style="dim")
    for sigma in sorted(POSTER_GAUSSIAN):
        row = [f"{sigma:.2f}"]
        if ceiling is not None:
            row.append(_pct(_at(ceiling, sigma)))
        for o, ref in ours:
            row += [_pct(_at(gaussian_curve(o.metrics), sigma)), _pct(ref[sigma])]
        table.add_row(*row)
    return table


def _at(curve: Mapping[float, float], sigma: float) -> float | None:
    return next((v for s, v in curve.items() if abs(s - sigma) < 1e-9), None)


def shared_noise_ceiling(outcomes: Sequence[PointOutcome]) -> dict[float, float] | None:
    """The spirals' noise ceiling (:func:`evaluation.poster.spirals_noise_ceiling`) when every point shares its
    data and noise draws (a θ or model grid); ``None`` otherwise."""
    if not outcomes:
        return None
    specs = {(o.point.spec.dataset.model_dump_json(), repr(o.point.spec.evaluate.gaussian)) for o in outcomes}
    return spirals_noise_ceiling(outcomes[0].point.spec) if len(specs) == 1 else None


def print_wide(table: Table) -> None:
    """On a terminal, fit its width; elsewhere (a pipe, a log, CI) print the table at its natural width rather
    than squashing columns into 80 characters."""
    if console.is_terminal:
        console.print(table)
        return
    from rich.measure import Measurement

    needed = Measurement.get(console, console.options.update(width=1000), table).maximum
    width = console.width
    console.width = max(width, needed)
    try:
        console.print(table)
    finally:
        console.width = width


def trend_lines(outcomes: Sequence[PointOutcome], ceiling: Mapping[float, float] | None = None) -> list[str]:
    """Does Gaussian accuracy rise with θ at σ = 0.3 and 0.5, and how far below the data's noise ``ceiling``."""
    lines = []
    for sigma in sorted({0.3, 0.5}):
        check = trend_check(outcomes, sigma)
        if check is None or check.rises is None:
            continue
        values = ", ".join(f"θ={format_value(t)}: {_pct(v)}" for t, v in check.by_theta.items())
        verdict = "rises" if check.rises else "does NOT rise"
        shape = "monotone" if check.monotone else "not monotone"
        lines.append(f"accuracy at σ={sigma:g} {verdict} from θ_min to θ_max ({shape}): {values}")
        if ceiling is not None and _at(ceiling, sigma) is not None:
            best = _at(ceiling, sigma)
            gaps = ", ".join(f"θ={format_value(t)}: {100 * (best - v):+.1f}" for t, v in check.by_theta.items())
            lines.append(f"  below the data's ceiling at σ={sigma:g} ({_pct(best)}, nearest arm) by: {gaps} points")
    return lines


# ---------------------------------------------------------------------------------------------------- running
def run_points(points: Sequence[SweepPoint], backend: Backend, out_dir: Path | None) -> list[PointOutcome]:
    """Every point through ``backend`` (in-process: each writes to ``out_dir/<point name>/``), reported as it
    ends; a point whose end is unknown (the server stopped answering, the timeout passed) counts as failed."""
    outcomes: list[PointOutcome | None] = [None] * len(points)

    def done(i: int, run: JobRun) -> None:
        status = "failed" if run.status == "unknown" else run.status
        outcomes[i] = PointOutcome(points[i], status, run.metrics, run.error, run.out_dir, run.job_id)
        _report(outcomes[i])

    dirs = None if out_dir is None or not isinstance(backend, InProcess) else [out_dir / p.name for p in points]
    try:
        backend.run([p.data for p in points], dirs, on_done=done)
    except BackendError as exc:
        raise fail(f"submitting {exc.name}: {exc}" if exc.name else str(exc)) from None
    except KeyboardInterrupt:
        raise fail("interrupted", code=130) from None
    return [o for o in outcomes if o is not None]


def _report(o: PointOutcome) -> None:
    if o.ok and "clean_acc" not in o.metrics and "clean_mse" in o.metrics:
        clean = format_metric("clean_mse", o.metrics["clean_mse"])
        console.print(f"[green]done[/] {o.point.name}: clean MSE {clean}", highlight=False)
    elif o.ok:
        clean = o.metrics.get("clean_acc")
        console.print(f"[green]done[/] {o.point.name}: clean {_pct(clean)}%", highlight=False)
    else:
        err_console.print(f"[red]{o.status}[/] {o.point.name}: {o.error}", highlight=False)


# ---------------------------------------------------------------------------------------------------- command
def sweep(
    spec_file: Annotated[Path, typer.Argument(help='job spec (JSON); a top-level "sweep" object adds grid axes')],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="grid axis PATH=V1,V2,… (repeatable; overrides the file's sweep for PATH)"),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="output directory (default: runs/<name>-sweep)")] = None,
    server: Annotated[str | None, typer.Option("--server", help="submit the points to this API and wait")] = None,
    compare_reshniak_webster: Annotated[
        bool,
        typer.Option(
            "--compare-reshniak-webster",
            "--compare-seed001",
            help="print the Gaussian-noise table of Reshniak & Webster's poster beside ours (--compare-seed001: "
            "the old name)",
        ),
    ] = False,
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="in-process: points run in parallel processes")] = 1,
    poll: Annotated[float, typer.Option(help="--server: seconds between status polls")] = 1.0,
    timeout: Annotated[float | None, typer.Option(help="--server: give up waiting after this many seconds")] = None,
) -> None:
    """Run a grid of jobs over dotted spec paths and print one comparison table (exit 1 if a point failed)."""
    data = read_spec_file(spec_file)
    try:
        base, file_axes = split_sweep(data)
        axes = merge_axes(file_axes, dict(parse_set(option) for option in set_ or []))
        points = expand_grid(base, axes)
    except SweepError as exc:
        raise fail(str(exc)) from None
    title = f"sweep {base.get('name', spec_file.stem)}: {len(points)} point(s)"
    console.print(title + (f" on {server}" if server else " in-process"), highlight=False)

    if server is not None:

        def submitted(i: int, _spec: Mapping, job: dict) -> None:
            console.print(f"submitted {points[i].name}: job {job['id']}", highlight=False)

        with RobustlabClient(server) as client:
            outcomes = run_points(points, OnServer(client, poll, timeout, on_submitted=submitted), None)
        out_dir = out
    else:
        out_dir = out or Path("runs") / f"{base.get('name', spec_file.stem)}-sweep"
        outcomes = run_points(points, InProcess(jobs=jobs), out_dir)

    print_wide(comparison_table(outcomes, title))
    if compare_reshniak_webster:
        ceiling = shared_noise_ceiling([o for o in outcomes if o.ok])  # one noisy pass of the nearest-arm rule
        table = poster_table(outcomes, ceiling)
        if table is None:
            console.print("no point has a θ of the poster's table (0, 0.25, 0.5, 0.75, 1): nothing to compare")
        else:
            print_wide(table)
        for line in trend_lines(outcomes, ceiling):
            console.print(line, highlight=False)
    if out_dir is not None:
        _write_summary(Path(out_dir), outcomes, base.get("name", "sweep"), compare_reshniak_webster)
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)


def _write_summary(out_dir: Path, outcomes: Sequence[PointOutcome], name: str, reference: bool) -> None:
    """``sweep.json`` (every point's grid values and metrics) and ``sweep_gaussian.png``."""
    from evaluation.plots import SWEEP_FILE, plot_sweep_gaussian

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sweep.json").write_text(json.dumps(summary(outcomes), indent=2, sort_keys=True))
    labels = axis_labels(list(outcomes[0].point.params)) if outcomes else {}
    kind = metrics.gaussian_kind([o.metrics for o in outcomes if o.ok]) or "gaussian_acc"
    curves: dict[str, Mapping[float, float]] = {
        o.point.label(labels): gaussian_curve(o.metrics, kind) for o in outcomes
    }
    refs = None
    if reference and kind == "gaussian_acc":
        refs = {}
        theta_only = list(labels) == ["model.theta"]
        for o in outcomes:
            ref = poster_reference(theta_of(o.point))
            if ref is not None:  # a θ-only grid: our label, so the same colour as our curve; else one per θ
                refs[o.point.label(labels) if theta_only else f"θ={format_value(theta_of(o.point))}"] = ref
    try:
        plot_sweep_gaussian(curves, out_dir / SWEEP_FILE, name, refs, kind=kind)
    except Exception as exc:
        err_console.print(f"sweep plot not written: {type(exc).__name__}: {exc}", highlight=False)
    console.print(f"wrote {out_dir}/sweep.json and {out_dir}/{SWEEP_FILE}", highlight=False)
