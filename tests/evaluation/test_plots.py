"""Plots: every PNG is a real, non-blank image; the runner writes them next to result.json and keeps the per-sample
certified radii out of the JSON metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.spec import JobSpec
from evaluation import plots
from evaluation.runner import RADIUS_KEY, run_job

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

METRICS = {
    "clean_acc": 0.95,
    **{f"gaussian_acc@{s:g}": 0.95 - s for s in (0.0, 0.1, 0.2, 0.3)},
    **{f"gaussian_acc_std@{s:g}": 0.02 * s for s in (0.0, 0.1, 0.2, 0.3)},
    "pgd_linf_acc@0.05": 0.7,
    "pgd_linf_acc@0.1": 0.4,
    "pgd_l2_acc@0.05": 0.8,
    "pgd_l2_acc@0.1": 0.6,
    "certified_l2_acc@0.05": 0.5,
    "certified_l2_acc@0.1": 0.2,
}


def assert_real_png(path: Path, min_colours: int = 8) -> None:
    """A decodable PNG of a sensible size, with drawn content (not one flat colour)."""
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC, path
    image = matplotlib.image.imread(path)  # (H, W, 4) floats in [0, 1]
    assert image.ndim == 3 and image.shape[0] >= 200 and image.shape[1] >= 300, image.shape
    rgb = (image[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) >= min_colours, f"{path.name} is nearly blank"
    ink = (rgb.min(axis=1) < 200).mean()  # share of pixels that are not (near) white
    assert 0.01 < ink < 0.9, f"{path.name}: {ink:.1%} of the pixels are drawn"


def test_write_plots_writes_three_valid_pngs(tmp_path: Path) -> None:
    radii = np.abs(np.random.default_rng(0).normal(0.0, 0.1, 200))
    radii[:30] = 0.0
    written = plots.write_plots(
        tmp_path, METRICS, "unit-test", radii=radii, certified_eps=[0.05, 0.1], radius_method="pairwise"
    )
    assert written == list(plots.PLOT_FILES)
    for name in written:
        assert_real_png(tmp_path / name)
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"


def test_plots_for_missing_sections_are_skipped(tmp_path: Path) -> None:
    only_gaussian = {k: v for k, v in METRICS.items() if k.startswith(("clean", "gaussian"))}
    assert plots.write_plots(tmp_path, only_gaussian, "g") == [plots.GAUSSIAN_FILE]
    assert plots.write_plots(tmp_path / "none", {"clean_acc": 1.0}, "none") == []
    assert plots.plot_radius([], tmp_path / "r.png", "empty") is None


def test_the_eps_plot_draws_one_smoothing_curve_per_sigma_beside_the_lipschitz_one(tmp_path: Path) -> None:
    smoothed = {
        "smoothed_clean_acc@0.12": 0.9, "smoothed_clean_acc@0.5": 0.7,
        "smoothed_certified_l2_acc_sigma0.12@0.05": 0.8, "smoothed_certified_l2_acc_sigma0.12@0.1": 0.6,
        "smoothed_certified_l2_acc_sigma0.5@0.05": 0.65, "smoothed_certified_l2_acc_sigma0.5@0.1": 0.6,
    }  # fmt: skip
    curves = plots._present({**METRICS, **smoothed}, "eps", "classification", METRICS["clean_acc"])
    by_legend = {legend: (kind, style, points, zero) for kind, legend, style, points, zero in curves}
    lipschitz = next(v for k, v in by_legend.items() if v[0] == "certified_l2_acc")
    assert "Lipschitz" in next(k for k, v in by_legend.items() if v[0] == "certified_l2_acc")
    assert lipschitz[2] == [(0.05, 0.5), (0.1, 0.2)] and lipschitz[3] == METRICS["clean_acc"]
    sigma_curves = {k: v for k, v in by_legend.items() if v[0] == "smoothed_certified_l2_acc"}
    assert [k.rsplit("σ=", 1)[1] for k in sigma_curves] == ["0.12", "0.5"]
    assert [v[3] for v in sigma_curves.values()] == [0.9, 0.7]  # each starts at its smoothed clean accuracy
    assert len({v[1][0] for v in sigma_curves.values()}) == 2 and all(v[1][2] == "--" for v in sigma_curves.values())
    path = plots.plot_eps({**METRICS, **smoothed}, tmp_path / "eps.png", "smoothing")
    assert_real_png(path)


def test_series_reads_flat_metric_names() -> None:
    assert plots.series(METRICS, "pgd_l2_acc") == [(0.05, 0.8), (0.1, 0.6)]
    assert plots.series({"gaussian_acc@x": 1.0, "gaussian_acc@0.2": 0.5}, "gaussian_acc") == [(0.2, 0.5)]


def test_radius_quantiles_are_compact_and_ordered() -> None:
    q = plots.radius_quantiles(np.linspace(0.0, 1.0, 101))
    assert len(q) == 21 and q[0] == 0.0 and q[-1] == 1.0 and q == sorted(q)
    assert q[10] == pytest.approx(0.5)
    assert plots.radius_quantiles([]) == []


def test_sweep_plot_with_reference_curves(tmp_path: Path) -> None:
    curves = {"theta=0": {0.0: 1.0, 0.3: 0.8, 0.5: 0.6}, "theta=1": {0.0: 1.0, 0.3: 0.9, 0.5: 0.7}}
    reference = {"theta=0": {0.0: 1.0, 0.5: 0.503}, "theta=1": {0.0: 1.0, 0.5: 0.734}}
    path = plots.plot_sweep_gaussian(curves, tmp_path / plots.SWEEP_FILE, "sweep", reference)
    assert_real_png(path)


SPEC = {
    "name": "plots-job",
    "dataset": {"name": "spirals", "n_train": 40, "n_test": 40},
    "model": {"family": "explicit", "width": 4, "depth": 2, "h": 0.3},
    "train": {"epochs": 5, "lr": 0.05, "seed": 0},
    "evaluate": {
        "gaussian": {"sigmas": [0.0, 0.1, 0.3], "repeats": 2},
        "pgd": {"norm": ["Linf", "L2"], "eps": [0.05, 0.1], "steps": 3},
        "certified": {"eps": [0.05, 0.1]},
    },
}


def test_run_job_writes_plots_next_to_result_json(tmp_path: Path) -> None:
    result = run_job(JobSpec.model_validate(SPEC), out_dir=tmp_path)
    for name in plots.PLOT_FILES:
        assert_real_png(tmp_path / name)
    stored = json.loads((tmp_path / "result.json").read_text())
    assert stored["info"]["plots"] == list(plots.PLOT_FILES)
    quantiles = stored["info"]["certified"]["radius_quantiles"]
    assert len(quantiles) == 21 and quantiles == sorted(quantiles)
    # the per-sample radii stay out of the JSON, on the RunResult
    assert all(isinstance(v, float) for v in stored["metrics"].values())
    assert RADIUS_KEY not in stored["info"] and RADIUS_KEY not in result.info
    radius = result.arrays[RADIUS_KEY]
    assert radius.shape == (40,) and (radius >= 0).all()
    certified = float((radius > 0.05).float().mean())
    assert certified == pytest.approx(stored["metrics"]["certified_l2_acc@0.05"])


def test_a_plotting_error_is_a_warning_not_a_failed_job(tmp_path: Path, monkeypatch) -> None:
    def broken(*_args, **_kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr("evaluation.runner.write_plots", broken)
    spec = {**SPEC, "evaluate": {"gaussian": {"sigmas": [0.0], "repeats": 1}}}
    result = run_job(JobSpec.model_validate(spec), out_dir=tmp_path)
    assert (tmp_path / "result.json").exists() and not list(tmp_path.glob("*.png"))
    assert result.info["plots"] == [] and any("plots not written" in w for w in result.info["warnings"])
