"""The metric catalog (core.metrics): every metric a real job reports is in it, and names are parsed, labelled,
formatted and ordered by it alone."""

from __future__ import annotations

import re

import pytest
from service_helpers import tiny_spec

from core import metrics
from core.spec import JobSpec
from evaluation.runner import run_job


def test_every_metric_a_classification_job_reports_has_a_catalog_record() -> None:
    spec = tiny_spec(
        "catalog",
        model={"family": "implicit", "width": 8, "depth": 3, "h": 0.2, "theta": 0.5},
        train={"epochs": 3, "lr": 0.02},
    )
    spec["evaluate"]["autoattack"] = {"norm": ["Linf"], "eps": [0.05], "steps": 10, "queries": 50}
    spec["evaluate"]["smoothing"] = {"sigmas": [0.25], "eps": [0.05], "n0": 10, "n": 50, "batch": 500}
    result = run_job(JobSpec.model_validate(spec))
    unknown = sorted(n for n in result.metrics if metrics.kind_info(n) is None)
    assert not unknown, f"metrics the catalog does not describe: {unknown}"
    kinds = {metrics.kind_of(n) for n in result.metrics}
    assert {"solver_forward_iterations", "autoattack_linf_acc", "certified_radius_q", "gaussian_acc_std"} <= kinds
    assert {"smoothed_certified_l2_acc_sigma0.25", "smoothed_clean_acc", "smoothed_radius_q_sigma0.25"} <= kinds
    assert all("classification" in metrics.kind_info(n).tasks for n in result.metrics)


@pytest.mark.parametrize(
    ("name", "direction"),
    [
        ("clean_acc", "higher"),
        ("gaussian_acc_std@0.3", "lower"),  # a spread over draws, not an accuracy
        ("gaussian_psnr_std@0.1", "lower"),
        ("gaussian_psnr@0.1", "higher"),
        ("pnp_denoiser_lipschitz", "lower"),
        ("pgd_linf_mse@0.05", "lower"),
        ("certified_radius_q@0.5", "higher"),
        ("eval_seconds", "lower"),
        ("smoothed_certified_l2_acc_sigma0.25@0.5", "higher"),
        ("smoothed_abstain_rate@0.25", "lower"),
        ("no_such_metric@0.1", None),
        ("gaussian_acc_sigma0.25@0.1", None),  # a second level only where the catalog gives the kind one
    ],
)
def test_direction(name: str, direction: str | None) -> None:
    assert metrics.direction(name) == direction
    assert metrics.default_order(name) == ("asc" if direction == "lower" else "desc")


def test_labels_formats_and_order() -> None:
    assert metrics.label("pgd_linf_acc@0.1") == "PGD L∞ ε=0.1"
    assert metrics.label("gaussian_acc@0.3") == "Gauss σ=0.3"
    assert metrics.label("certified_radius_q@0.5") == "cert. radius q=0.5"
    assert metrics.label("mystery@1") == "mystery@1"
    assert (
        metrics.format_value("clean_acc", 0.9312) == "93.1 %"
        and metrics.format_value("clean_acc", 0.5, False) == "50.0"
    )
    assert metrics.format_value("clean_psnr", 21.456) == "21.46 dB"
    assert metrics.format_value("train_seconds", 3.14159) == "3.14 s"
    assert metrics.format_value("solver_failures", 3.0) == "3"
    assert metrics.format_value("lipschitz_bound", 12345.678) == "1.235e+04"
    assert metrics.format_value("clean_acc", None) == "—"
    names = [
        "mystery",
        "certified_l2_acc@0.1",
        "pgd_linf_acc@0.1",
        "pgd_linf_acc@0.05",
        "gaussian_acc@0.3",
        "clean_acc",
    ]
    assert sorted(names, key=metrics.sort_key) == [
        "clean_acc", "gaussian_acc@0.3", "pgd_linf_acc@0.05", "pgd_linf_acc@0.1", "certified_l2_acc@0.1", "mystery",
    ]  # fmt: skip
    assert metrics.best("lipschitz_bound", [3.0, 1.0, 2.0]) == 1.0 and metrics.best("clean_acc", [0.1, 0.9]) == 0.9


def test_names_round_trip() -> None:
    assert metrics.metric_key("pgd_l2_acc", 0.5) == "pgd_l2_acc@0.5" and metrics.metric_key("clean_acc") == "clean_acc"
    assert metrics.split("pgd_l2_acc@0.5") == ("pgd_l2_acc", "0.5") and metrics.level_of("clean_acc") == float("inf")
    measured = {"gaussian_acc@0.2": 0.5, "gaussian_acc@x": 1.0, "gaussian_acc@0.1": 0.7}
    assert metrics.series(measured, "gaussian_acc") == [(0.1, 0.7), (0.2, 0.5)]


def test_a_second_level_is_written_and_read_by_the_catalog_alone() -> None:
    name = metrics.metric_key("smoothed_certified_l2_acc", 0.5, param=0.25)
    assert name == "smoothed_certified_l2_acc_sigma0.25@0.5"
    assert metrics.parse(name) == metrics.Parsed("smoothed_certified_l2_acc", "0.25", "0.5")
    assert metrics.split(name) == ("smoothed_certified_l2_acc_sigma0.25", "0.5")  # one curve, one group per σ
    assert metrics.parse("pgd_linf_acc@0.1") == metrics.Parsed("pgd_linf_acc", "", "0.1")
    assert metrics.base_kind("smoothed_radius_q_sigma1e-05") == ("smoothed_radius_q", "1e-05")
    assert metrics.base_kind("smoothed_radius_q_sigmax") == ("smoothed_radius_q_sigmax", "")
    with pytest.raises(ValueError, match="takes no second level"):
        metrics.metric_key("pgd_linf_acc", 0.1, param=0.25)
    assert metrics.label(name) == "smoothed cert. L2 σ=0.25 ε=0.5"
    assert metrics.label("smoothed_radius_q_sigma0.5@0.9", short=True) == "sm radius σ=0.5 q=0.9"
    assert metrics.format_value(name, 0.5) == "50.0 %" and metrics.is_fraction("smoothed_clean_acc@0.25")
    names = ["smoothed_certified_l2_acc_sigma0.5@0.1", "smoothed_certified_l2_acc_sigma0.12@0.5",
             "smoothed_certified_l2_acc_sigma0.12@0.1", "certified_l2_acc@0.1", "clean_acc"]  # fmt: skip
    assert sorted(names, key=metrics.sort_key) == [
        "clean_acc", "certified_l2_acc@0.1", "smoothed_certified_l2_acc_sigma0.12@0.1",
        "smoothed_certified_l2_acc_sigma0.12@0.5", "smoothed_certified_l2_acc_sigma0.5@0.1",
    ]  # fmt: skip
    measured = {"smoothed_certified_l2_acc_sigma0.5@0.1": 0.4, **dict.fromkeys(names[1:3], 0.6), "clean_acc": 1.0}
    assert metrics.param_series(measured, "smoothed_certified_l2_acc") == {
        "0.12": [(0.1, 0.6), (0.5, 0.6)], "0.5": [(0.1, 0.4)],
    }  # fmt: skip
    pattern = re.compile(metrics.NAME_PATTERN)
    assert all(pattern.match(n) for n in names) and not pattern.match("clean_acc;drop")
    assert re.match(metrics.GLOB_PATTERN, "smoothed_*_sigma0.25@*") and not re.match(metrics.GLOB_PATTERN, "a b")


def test_the_certificate_notes_say_what_each_certifies() -> None:
    found = dict(metrics.notes(["clean_acc", "certified_l2_acc@0.1", "smoothed_certified_l2_acc_sigma0.25@0.1"]))
    assert list(found) == ["cert. L2", "smoothed cert. L2"]
    assert "network itself" in found["cert. L2"] and "deterministic" in found["cert. L2"]
    assert "smoothed classifier" in found["smoothed cert. L2"] and "1 − α" in found["smoothed cert. L2"]


def test_plots_draw_the_catalog_kinds() -> None:
    eps = [k.name for k in metrics.plot_kinds("eps")]
    assert eps == [
        "robust_linf_acc", "robust_l2_acc", "pgd_linf_acc", "pgd_l2_acc", "autoattack_linf_acc", "autoattack_l2_acc",
        "certified_l2_acc", "smoothed_certified_l2_acc",
    ]  # fmt: skip
    assert all(metrics.CATALOG[k].legend for k in eps)
    assert [k.name for k in metrics.plot_kinds("eps", "regression")] == [
        "pgd_linf_mse", "pgd_l2_mse", "certified_linf_mse", "certified_l2_mse",
    ]  # fmt: skip


def test_threat_models_and_charts_agree_with_the_kinds_they_describe() -> None:
    """A threat model belongs to an ε-levelled kind whose name says its norm; a chart's curve starts from a
    level-free kind of the same task and unit (a kind with a second level: from a kind at that level, e.g. the
    smoothed clean accuracy at σ), and its compare-page overlay names are unique."""
    assert metrics.threat_model("pgd_l2_acc@0.5") == "L2" and metrics.threat_model("robust_linf_acc@0.1") == "Linf"
    assert metrics.threat_model("clean_acc") is None and metrics.threat_model("no_such_metric@0.1") is None
    for kind in metrics.CATALOG.values():
        if kind.norm is not None:
            assert kind.level == "eps" and f"_{kind.norm.lower()}_" in f"_{kind.name}_", kind.name
        if kind.chart is not None:
            assert kind.level is not None, kind.name
            start = metrics.CATALOG.get(kind.chart.start) if kind.chart.start else None
            if kind.chart.start:
                assert start is not None and start.level == kind.param, kind.name
                assert start.tasks == kind.tasks and start.unit == kind.unit, kind.name
    overlays = [k.chart.overlay for k in metrics.CATALOG.values() if k.chart and k.chart.overlay]
    assert len(overlays) == len(set(overlays)) and {"gaussian", "pgd_linf", "certified_l2"} <= set(overlays)
