"""Sweeps: ``--set`` parsing, the ``"sweep"`` key, grid expansion (order, names, nested paths, validation), the
comparison tables and the θ-trend check, and the ``robustlab sweep`` command end to end on a tiny grid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from cli.main import app
from cli.sweep import comparison_table, poster_table, shared_noise_ceiling, trend_lines
from evaluation.poster import POSTER_GAUSSIAN, poster_reference, spirals_noise_ceiling, trend_check
from evaluation.sweep import (
    MAX_POINTS,
    PointOutcome,
    SweepError,
    axis_labels,
    expand_grid,
    merge_axes,
    parse_set,
    split_sweep,
)

BASE = {
    "name": "tiny",
    "dataset": {"name": "spirals", "n_train": 20, "n_test": 20},
    "model": {"family": "implicit", "width": 2, "depth": 1, "h": 0.3, "theta": 0.5},
    "train": {"epochs": 2, "lr": 0.05, "seed": 0},
    "evaluate": {"gaussian": {"sigmas": [0.0, 0.3, 0.5], "repeats": 1}},
}


# ---------------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    ("option", "path", "values"),
    [
        ("model.theta=0,0.25,0.5,0.75,1", "model.theta", [0, 0.25, 0.5, 0.75, 1]),
        ("train.regularizers.stochastic.sigma=0.01, 0.05", "train.regularizers.stochastic.sigma", [0.01, 0.05]),
        ("model.activation=tanh,relu", "model.activation", ["tanh", "relu"]),
        ('model.spectral={"lower": -1, "upper": 1},null', "model.spectral", [{"lower": -1, "upper": 1}, None]),
        ("evaluate.gaussian.sigmas=[0, 0.1],[0.5]", "evaluate.gaussian.sigmas", [[0, 0.1], [0.5]]),
        ("model.shared_weights=true,false", "model.shared_weights", [True, False]),
    ],
)
def test_parse_set(option: str, path: str, values: list) -> None:
    assert parse_set(option) == (path, values)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("model.theta", "expected PATH=V1,V2"),
        ("=1,2", "expected PATH=V1,V2"),
        ("model.theta=0,,1", "empty value"),
        ("model..theta=1", "dotted field names"),
        ("name=a,b", "cannot be swept"),
    ],
)
def test_parse_set_rejects_malformed_options(option: str, message: str) -> None:
    with pytest.raises(SweepError, match=message):
        parse_set(option)


def test_split_sweep_strips_the_key_and_keeps_the_spec() -> None:
    data = {**BASE, "sweep": {"model.theta": [0, 1], "train.seed": [0, 1, 2]}}
    base, axes = split_sweep(data)
    assert base == BASE and axes == {"model.theta": [0, 1], "train.seed": [0, 1, 2]}
    assert split_sweep(BASE) == (BASE, {})
    base["model"]["theta"] = 0.9
    assert data["model"]["theta"] == 0.5, "split_sweep must not alias the input"


@pytest.mark.parametrize("bad", [[0, 1], {"model.theta": []}, {"model.theta": 0.5}])
def test_split_sweep_rejects_a_malformed_sweep(bad) -> None:
    with pytest.raises(SweepError):
        split_sweep({**BASE, "sweep": bad})


def test_set_options_override_the_file_axes() -> None:
    merged = merge_axes({"model.theta": [0, 1], "train.seed": [0]}, {"model.theta": [0.5]})
    assert merged == {"model.theta": [0.5], "train.seed": [0]}


# ---------------------------------------------------------------------------------------------------- grid
def test_expand_grid_is_a_cartesian_product_in_order() -> None:
    axes = {"model.theta": [0, 0.5, 1], "train.regularizers.stochastic.sigma": [0.01, 0.05]}
    points = expand_grid(BASE, axes)
    assert len(points) == 6
    assert [p.params["model.theta"] for p in points] == [0, 0, 0.5, 0.5, 1, 1]  # first axis slowest
    assert [p.spec.model.theta for p in points] == [0, 0, 0.5, 0.5, 1, 1]
    # a nested path is created where the base spec has no stochastic regularizer
    assert [p.spec.train.regularizers.stochastic.sigma for p in points] == [0.01, 0.05] * 3
    assert points[0].spec.train.regularizers.stochastic.weight == 1.0  # the rest of the sub-spec: defaults
    assert points[3].name == "tiny-theta=0.5-sigma=0.05"
    assert len({p.spec.spec_hash() for p in points}) == 6
    assert BASE["model"]["theta"] == 0.5 and "regularizers" not in BASE["train"]


def test_expand_grid_without_axes_is_the_base_spec() -> None:
    (point,) = expand_grid(BASE, {})
    assert point.name == "tiny" and point.params == {} and point.label() == "base"


def test_expand_grid_names_the_invalid_point() -> None:
    with pytest.raises(SweepError, match=r"model.theta=1.5 is not a valid job spec:\n  model.theta: Input should"):
        expand_grid(BASE, {"model.theta": [0.5, 1.5]})
    with pytest.raises(SweepError, match="'model.theta.bogus': model.theta is float, not an object"):
        expand_grid(BASE, {"model.theta.bogus": [1]})
    with pytest.raises(SweepError, match="at most"):
        expand_grid(BASE, {"train.seed": list(range(MAX_POINTS + 1))})
    with pytest.raises(SweepError, match="same name"):
        expand_grid(BASE, {"model.theta": [0.5, 0.5]})


def test_a_null_sub_spec_is_replaced_by_an_object() -> None:
    base = {**BASE, "evaluate": {"gaussian": None}}
    (point,) = expand_grid(base, {"evaluate.gaussian.repeats": [3]})
    assert point.spec.evaluate.gaussian.repeats == 3


def test_axis_labels_disambiguate_clashing_leaf_names() -> None:
    labels = axis_labels(["model.theta", "train.regularizers.stochastic.sigma", "dataset.seed", "train.seed"])
    assert labels == {
        "model.theta": "theta",
        "train.regularizers.stochastic.sigma": "sigma",
        "dataset.seed": "dataset.seed",
        "train.seed": "train.seed",
    }


# ---------------------------------------------------------------------------------------------------- summary
def outcomes_for(curves: dict[float, dict[float, float]], extra: dict[str, float] | None = None):
    points = expand_grid(BASE, {"model.theta": list(curves)})
    result = []
    for point, curve in zip(points, curves.values(), strict=True):
        metrics = {"clean_acc": curve[0.0], **{f"gaussian_acc@{s:g}": v for s, v in curve.items()}, **(extra or {})}
        result.append(PointOutcome(point, "succeeded", metrics))
    return result


def render(table) -> str:
    console = Console(record=True, width=250)
    console.print(table)
    return console.export_text()


def test_poster_reference_table_is_the_posters() -> None:
    assert poster_reference(1.0)[0.5] == pytest.approx(0.734)
    assert poster_reference(0.0)[0.3] == pytest.approx(0.785)
    assert poster_reference(0.3) is None and poster_reference(None) is None
    assert [POSTER_GAUSSIAN[s][0.25] for s in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)] == [100, 100, 96.7, 87.3, 75.1, 63.2]


def test_tables_show_percentages_per_point_and_the_seed_beside_ours() -> None:
    outcomes = outcomes_for(
        {0.0: {0.0: 1.0, 0.3: 0.8, 0.5: 0.61}, 1.0: {0.0: 1.0, 0.3: 0.9, 0.5: 0.72}},
        {"pgd_linf_acc@0.1": 0.5, "certified_l2_acc@0.1": 0.25},
    )
    outcomes.append(PointOutcome(expand_grid(BASE, {"model.theta": [0.5]})[0], "failed", {}, "Boom: solver"))
    text = render(comparison_table(outcomes, "cmp"))
    for cell in ("theta", "clean", "gauss@0.3", "pgd∞@0.1", "cert2@0.1", "72.0", "25.0", "failed", "Boom"):
        assert cell in text, cell
    ceiling = shared_noise_ceiling([o for o in outcomes if o.ok])
    seed = render(poster_table(outcomes, ceiling))
    assert "Reshniak & Webster" in seed and "RW poster" in seed and "73.4" in seed and "50.3" in seed and "72.0" in seed
    assert "0.40" in seed and "–" in seed  # σ = 0.4 is in the seed's table but was not measured here
    assert "nearest" in seed and "ceiling" in seed  # spirals: the data's noise ceiling beside ours
    assert any("below the data's ceiling at σ=0.5" in line for line in trend_lines(outcomes, ceiling))


def test_the_spirals_noise_ceiling_is_the_nearest_arm_rule_on_the_evaluations_own_draws() -> None:
    from core.spec import JobSpec
    from evaluation.datasets import nearest_arm_labels, two_spirals
    from evaluation.gaussian import noisy_copies

    data = two_spirals(scale=4.0)
    assert torch.equal(nearest_arm_labels(data.x_test, 4.0), data.y_test)  # clean points sit on their own arm
    spec = JobSpec.model_validate(
        {
            **BASE,
            "dataset": {"name": "spirals", "scale": 4.0},
            "evaluate": {"gaussian": {"sigmas": [0.0, 0.5, 2.0], "repeats": 3}},
        }
    )
    ceiling = spirals_noise_ceiling(spec)
    sigmas = spec.evaluate.gaussian.sigmas
    noisy = noisy_copies(data.x_test, sigmas, 3, spec.evaluate.gaussian.seed, None).view(len(sigmas), -1, 2)
    direct = (nearest_arm_labels(noisy[1], 4.0) == data.y_test.repeat(3)).double().mean().item()  # σ-major: σ = 0.5
    assert ceiling[0.5] == direct and ceiling[0.0] == 1.0
    assert 0.6 < ceiling[0.5] < 1.0 and ceiling[2.0] < ceiling[0.5]
    assert spirals_noise_ceiling(JobSpec.model_validate({**BASE, "dataset": {"name": "digits"}})) is None


def test_trend_check_compares_the_extreme_thetas() -> None:
    rising = outcomes_for({0.0: {0.0: 1.0, 0.5: 0.5}, 0.5: {0.0: 1.0, 0.5: 0.55}, 1.0: {0.0: 1.0, 0.5: 0.7}})
    check = trend_check(rising)
    assert check.sigma == 0.5 and check.rises and check.monotone
    falling = outcomes_for({0.0: {0.0: 1.0, 0.5: 0.7}, 1.0: {0.0: 1.0, 0.5: 0.6}})
    assert trend_check(falling, 0.5).rises is False
    assert "does NOT rise" in " ".join(trend_lines(falling))
    assert trend_check(outcomes_for({0.5: {0.0: 1.0}})) is None


# ---------------------------------------------------------------------------------------------------- running
def test_in_process_points_give_the_same_numbers_in_worker_processes(tmp_path: Path) -> None:
    from cli.backend import InProcess
    from cli.sweep import run_points

    points = expand_grid(BASE, {"model.theta": [0, 1]})
    serial = run_points(points, InProcess(), tmp_path / "serial")
    parallel = run_points(points, InProcess(jobs=2), tmp_path / "parallel")
    assert [o.status for o in serial] == ["succeeded", "succeeded"]
    assert [o.metrics["gaussian_acc@0.3"] for o in serial] == [o.metrics["gaussian_acc@0.3"] for o in parallel]
    assert (tmp_path / "parallel" / "tiny-theta=1" / "result.json").exists()


def test_sweep_command_prints_one_table_and_writes_a_summary(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**BASE, "sweep": {"model.theta": [0, 1]}}))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["sweep", str(spec), "--out", str(out), "--compare-reshniak-webster"])
    assert result.exit_code == 0, result.output
    assert "sweep tiny: 2 point(s)" in result.output and "RW poster" in result.output
    assert "gauss@0.5" in result.output and "accuracy at σ=0.5" in result.output
    summary = json.loads((out / "sweep.json").read_text())
    assert [p["params"] for p in summary["points"]] == [{"model.theta": 0}, {"model.theta": 1}]
    assert all(p["status"] == "succeeded" for p in summary["points"])
    assert (out / "tiny-theta=0" / "plot_gaussian.png").exists() and (out / "sweep_gaussian.png").exists()


def test_sweep_command_exit_codes(tmp_path: Path, monkeypatch) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(BASE))
    runner = CliRunner()
    bad = runner.invoke(app, ["sweep", str(spec), "--set", "model.theta=0,2"])
    assert bad.exit_code == 2 and "model.theta=2" in bad.output
    malformed = runner.invoke(app, ["sweep", str(spec), "--set", "model.theta"])
    assert malformed.exit_code == 2

    def fail_second(spec_json: str, out_dir, threads, progress=None, resume=False):
        if json.loads(spec_json)["model"]["theta"] == 1:
            return "failed", {}, {}, "RuntimeError: boom"
        return "succeeded", {"clean_acc": 1.0, "gaussian_acc@0.5": 0.5}, {}, None

    monkeypatch.setattr("cli.backend._run_one", fail_second)
    failed = runner.invoke(app, ["sweep", str(spec), "--set", "model.theta=0,1", "--out", str(tmp_path / "o")])
    assert failed.exit_code == 1 and "boom" in failed.output


def test_run_command_runs_the_base_point_of_a_sweep_preset(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**BASE, "sweep": {"model.theta": [0, 1]}}))
    result = CliRunner().invoke(app, ["run", str(spec), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "running its base point only" in result.output
    assert json.loads((tmp_path / "run" / "spec.json").read_text())["model"]["theta"] == 0.5


SINE = {
    "name": "sine",
    "task": "regression",
    "dataset": {"name": "sine", "n_train": 21, "n_test": 20, "seed": 0},
    "model": {"family": "explicit", "width": 2, "hidden": 8, "depth": 1, "h": 1.0, "activation": "tanh"},
    "train": {"epochs": 3, "lr": 0.01, "optimizer": "adam", "seed": 0},
    "evaluate": {
        "gaussian": {"sigmas": [0.1, 0.3], "repeats": 2},
        "pgd": {"norm": ["Linf", "L2"], "eps": [0.1], "steps": 2, "restarts": 1},
        "certified": {"eps": [0.1]},
    },
    "device": "cpu",
}


def test_sweep_command_summarises_regression_points_by_mse_and_psnr(tmp_path: Path) -> None:
    from cli.sweep import format_metric
    from evaluation.plots import SWEEP_FILE

    spec = tmp_path / "sine.json"
    spec.write_text(json.dumps(SINE))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["sweep", str(spec), "--set", "model.depth=1,2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(line for line in lines if "gauss PSNR@0.1" in line)
    titles = ["clean MSE", "clean PSNR", "gauss PSNR@0.3", "pgd∞ MSE@0.1", "pgd2 MSE@0.1", "cert∞ MSE@0.1"]
    assert all(title in header for title in [*titles, "cert2 MSE@0.1"]), header
    assert "┃ clean ┃" not in header and "gauss@" not in header and "pgd∞@" not in header  # no accuracy columns
    columns = [
        "clean_mse", "clean_psnr", "gaussian_psnr@0.1", "gaussian_psnr@0.3", "pgd_linf_mse@0.1", "pgd_l2_mse@0.1",
        "certified_linf_mse@0.1", "certified_l2_mse@0.1",
    ]  # fmt: skip
    for depth in (1, 2):
        metrics = json.loads((out / f"sine-depth={depth}" / "result.json").read_text())["metrics"]
        row = next(line for line in lines if line.split("│")[1:2] and line.split("│")[1].strip() == str(depth))
        cells = [cell.strip() for cell in row.split("│")[2:-2]]
        assert cells == [format_metric(c, metrics[c]) for c in columns], (row, metrics)
        assert cells[1] == f"{metrics['clean_psnr']:.2f}" and cells[0] == f"{metrics['clean_mse']:.4g}"
    summary = json.loads((out / "sweep.json").read_text())
    assert [p["params"] for p in summary["points"]] == [{"model.depth": 1}, {"model.depth": 2}]
    assert (out / SWEEP_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
