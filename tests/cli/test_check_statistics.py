"""The gate's statistical rule: the tests' null is "drop ≤ tol" (a drop within the tolerance never fails, a drop at
the tolerance fails at most at rate alpha), Holm over metrics, the paired / over-runs / unpaired / exact choice,
bad input (``--alpha``, different test sets, result files without per-sample outcomes), per-sample outcomes in
``result.json``, and ``--make-baseline``."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from check_helpers import gate, text
from scipy import stats
from typer.testing import CliRunner

from cli.check import Policy, Rule, Run, Side, compare, load_result_file
from cli.check.statistics import holm, mcnemar_drop, paired_bootstrap_drop, seed_t_test
from cli.main import app
from evaluation.outcomes import pack_mask, pack_outcomes, unpack_mask, unpack_outcomes

TINY: dict[str, Any] = {
    "name": "gate-stats",
    "dataset": {"name": "spirals", "n_train": 100, "n_test": 100},
    "model": {"family": "explicit", "width": 8, "depth": 4, "h": 0.3},
    "train": {"epochs": 60, "lr": 0.02},
    "evaluate": {
        "gaussian": {"sigmas": [0.1], "repeats": 2},
        "pgd": {"norm": ["Linf"], "eps": [0.05], "steps": 5},
        "certified": {"eps": [0.05]},
    },
}


def outcome_file(path: Path, masks: dict[str, np.ndarray], test_set: str = "sha256:same", **extra: float) -> Path:
    """A result.json with per-sample outcomes (its metrics are their means) and optional extra metrics."""
    metrics = {name: float(np.mean(m)) for name, m in masks.items()} | extra
    info = {"outcomes": pack_outcomes({k: torch.from_numpy(v) for k, v in masks.items()}, test_set)}
    path.write_text(json.dumps({"name": "synthetic", "metrics": metrics, "info": info}))
    return path


def paired(n: int, base_acc: float, lost: int, gained: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Baseline outcomes with ``base_acc`` accuracy, and a candidate that loses ``lost`` and gains ``gained``."""
    rng = np.random.default_rng(seed)
    b = np.zeros(n, bool)
    b[rng.permutation(n)[: round(base_acc * n)]] = True
    c = b.copy()
    c[rng.choice(np.flatnonzero(b), lost, replace=False)] = False
    c[rng.choice(np.flatnonzero(~b), gained, replace=False)] = True
    return b, c


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------- the tests
def test_mcnemar_at_zero_tolerance_is_the_exact_binomial_test_and_a_drop_within_tol_never_rejects() -> None:
    for lost, gained in ((9, 1), (12, 5), (3, 3)):
        expected = stats.binomtest(lost, lost + gained, 0.5, alternative="greater").pvalue
        assert mcnemar_drop(lost, gained, 500, 0.0).p == pytest.approx(expected)
    assert mcnemar_drop(0, 0, 100, 0.0).p == 1.0
    # observed drop (12 − 2)/500 = 0.02 = tol: no evidence beyond it
    assert mcnemar_drop(12, 2, 500, 0.02).p > 0.5
    # a larger tolerance can only make the test less willing to reject
    ps = [mcnemar_drop(30, 5, 500, tol).p for tol in (0.0, 0.01, 0.03, 0.05)]
    assert ps == sorted(ps) and ps[0] < 1e-4 and ps[-1] > 0.5  # observed drop 0.05 = tol
    assert mcnemar_drop(30, 5, 500, 0.2).p == 1.0  # a drop of 0.2 needs more than 35 discordant samples


@pytest.mark.parametrize("tol", [0.0, 0.02])
def test_mcnemar_false_alarm_rate_at_the_tolerance_is_at_most_alpha_and_power_beyond_it(tol: float) -> None:
    """Simulated paired outcomes with a true drop exactly at tol (the null's boundary) reject ≤ alpha; a drop of
    tol + 0.06 on 800 samples is found almost always."""
    rng = np.random.default_rng(1)
    n, alpha, psi = 800, 0.05, 0.08

    def rate(delta: float) -> float:
        p_lost, p_gained = (psi + delta) / 2, (psi - delta) / 2
        draws = rng.multinomial(n, [p_lost, p_gained, 1 - psi], size=2000)
        return float(np.mean([mcnemar_drop(int(a), int(b), n, tol).p <= alpha for a, b, _ in draws]))

    null_rate = rate(tol)
    assert null_rate <= alpha + 0.015, null_rate  # 2000 draws: binomial SE 0.005
    assert rate(tol + 0.06) > 0.9


def test_paired_bootstrap_and_t_test_are_one_sided_against_the_tolerance() -> None:
    drops = np.r_[np.ones(30), -np.ones(10), np.zeros(160)] * 1.0  # mean drop 0.1 on 200 samples
    assert paired_bootstrap_drop(drops, 0.0, 0.05).p < 0.01
    within = paired_bootstrap_drop(drops, 0.1, 0.05)
    assert within.p > 0.4 and within.lower is not None and within.lower < 0.1
    assert paired_bootstrap_drop(np.zeros(50), 0.0, 0.05).p == 1.0
    # t-test over runs: (drop − tol) / (s·√(1/M + 1/N)) with M + N − 2 df, sign −1 for lower-is-better
    found = seed_t_test([0.80, 0.82, 0.78], [0.70, 0.72], 0.02, 0.05, 1.0)
    s = np.sqrt(((0.02**2 + 0.02**2) + (0.01**2 * 2)) / 3)
    t = (0.09 - 0.02) / (s * np.sqrt(1 / 3 + 1 / 2))  # drop 0.80 − 0.71
    assert found.p == pytest.approx(stats.t.sf(t, 3))
    assert seed_t_test([1.0, 1.1], [1.3, 1.4], 0.0, 0.05, -1.0).p < 0.05  # a rise of a lower-is-better metric


def test_holm_adjusted_p_values() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5]) == [0.5] and holm([]) == []


# ---------------------------------------------------------------------------------------------------- decisions
def test_paired_outcomes_use_mcnemar_and_holm_controls_the_family(tmp_path: Path) -> None:
    # two metrics, each losing 18 and gaining 8 of 800 samples: exact McNemar p ≈ 0.038 each at tol 0
    b1, c1 = paired(800, 0.7, lost=18, gained=8, seed=1)
    b2, c2 = paired(800, 0.6, lost=18, gained=8, seed=2)
    base = outcome_file(tmp_path / "b.json", {"clean_acc": b1, "pgd_linf_acc@0.1": b2})
    cand = outcome_file(tmp_path / "c.json", {"clean_acc": c1, "pgd_linf_acc@0.1": c2})
    alone = stats.binomtest(18, 26, 0.5, alternative="greater").pvalue
    assert 0.025 < alone < 0.05
    one = gate("--candidate", cand, "--baseline", base, "--max-drop", "pgd_linf_acc@0.1=0")
    assert one.exit_code == 1, text(one)  # significant alone …
    out_xml, out_md = tmp_path / "r.xml", tmp_path / "r.md"
    both = gate("--candidate", cand, "--baseline", base, "--max-drop", "clean_acc=0", "--max-drop",
                "pgd_linf_acc@0.1=0", "--junit", out_xml, "--summary", out_md)  # fmt: skip
    assert both.exit_code == 0, text(both)  # … not after Holm over two metrics (both adjusted to 2p > 0.05)
    cases = {c.get("name"): c for c in ET.parse(out_xml).getroot().iter("testcase")}
    detail = cases["pgd_linf_acc@0.1"].find("system-out").text
    assert "exact McNemar (18 lost, 8 gained of 800" in detail and f"{alone:.3g} ({2 * alone:.3g})" in detail
    md = out_md.read_text()
    for cell in ("| drop |", "| allowed |", "| test |", "| p (Holm) |", "| +0.0125 |", "✅ pass"):
        assert cell in md, cell
    assert "alpha = 0.05" in md and "Holm over 2 bound(s)" in md
    # a clear drop (40 lost, 10 gained) fails, and its JUnit failure says why
    b3, c3 = paired(800, 0.8, lost=40, gained=10, seed=3)
    base = outcome_file(tmp_path / "b3.json", {"clean_acc": b3})
    cand = outcome_file(tmp_path / "c3.json", {"clean_acc": c3})
    clear = gate("--candidate", cand, "--baseline", base, "--max-drop", "clean_acc=0.01", "--junit", out_xml)
    assert clear.exit_code == 1, text(clear)
    failure = ET.parse(out_xml).getroot().find("./testsuite/testcase[@name='clean_acc']/failure")
    assert "fell by 0.0375" in failure.get("message") and "exact McNemar p =" in failure.get("message")
    assert "test: exact McNemar (40 lost, 10 gained of 800" in failure.text and "verdict: regression" in failure.text


def test_a_drop_within_the_tolerance_never_fails_however_certain(tmp_path: Path) -> None:
    b, c = paired(5000, 0.9, lost=100, gained=0)  # drop exactly 0.02, zero noise about its sign
    base = outcome_file(tmp_path / "b.json", {"clean_acc": b})
    cand = outcome_file(tmp_path / "c.json", {"clean_acc": c})
    assert gate("--candidate", cand, "--baseline", base, "--max-drop", "clean_acc=0.02").exit_code == 0
    assert gate("--candidate", cand, "--baseline", base, "--max-drop", "clean_acc=0.015").exit_code == 1


def test_different_test_sets_fall_back_to_the_unpaired_rule_and_say_so(tmp_path: Path) -> None:
    b, c = paired(800, 0.8, lost=80, gained=0)
    base = outcome_file(tmp_path / "b.json", {"clean_acc": b}, test_set="sha256:aaa")
    cand = outcome_file(tmp_path / "c.json", {"clean_acc": c}, test_set="sha256:bbb")
    result = gate("--candidate", cand, "--baseline", base, "--max-drop", "clean_acc=0.02")
    assert result.exit_code == 1, text(result)
    assert "different test sets: no paired test" in text(result) and "unpaired z test" in text(result)


def test_old_result_files_without_outcomes_use_the_unpaired_rule_with_a_note(tmp_path: Path) -> None:
    b, c = paired(800, 0.8, lost=80, gained=0)
    new = outcome_file(tmp_path / "new.json", {"clean_acc": b})
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"metrics": {"clean_acc": float(c.mean())}}))  # before per-sample outcomes
    result = gate("--candidate", old, "--baseline", new, "--max-drop", "clean_acc=0.02")
    assert result.exit_code == 1, text(result)  # never a silent pass: compared as exact numbers
    assert "missing from the candidate" in text(result) and "exact comparison" in text(result)
    within = gate("--candidate", old, "--baseline", new, "--max-drop", "clean_acc=0.2")
    assert within.exit_code == 0 and "no paired test" in text(within)


def test_malformed_outcomes_are_a_warning_not_a_crash(tmp_path: Path) -> None:
    base = outcome_file(tmp_path / "b.json", {"clean_acc": np.ones(10, bool)})
    data = json.loads(base.read_text())
    data["info"]["outcomes"]["metrics"]["clean_acc"]["bits"] = "!!not base64"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(data))
    result = gate("--candidate", broken, "--baseline", base, "--max-drop", "clean_acc=0")
    assert result.exit_code == 0 and "per-sample outcomes unreadable" in text(result)


@pytest.mark.parametrize("alpha", ["0", "1", "-0.1", "1.5", "nan"])
def test_alpha_outside_the_open_unit_interval_is_exit_2(tmp_path: Path, alpha: str) -> None:
    base = outcome_file(tmp_path / "b.json", {"clean_acc": np.ones(10, bool)})
    result = gate("--candidate", base, "--baseline", base, "--max-drop", "clean_acc=0", "--alpha", alpha)
    assert result.exit_code == 2 and "--alpha must be in (0, 1)" in text(result)
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps({"max_drop": {"clean_acc": 0}, "alpha": 1.5}))
    result = gate("--candidate", base, "--baseline", base, "--policy", policy)
    assert result.exit_code == 2 and "alpha" in text(result)


def test_alpha_sets_the_level(tmp_path: Path) -> None:
    b, c = paired(800, 0.7, lost=18, gained=8, seed=1)  # exact McNemar p ≈ 0.038
    base = outcome_file(tmp_path / "b.json", {"clean_acc": b})
    cand = outcome_file(tmp_path / "c.json", {"clean_acc": c})
    args = ["--candidate", cand, "--baseline", base, "--max-drop", "clean_acc=0"]
    assert gate(*args).exit_code == 1
    assert gate(*args, "--alpha", "0.01").exit_code == 0


def test_runs_of_different_seeds_are_compared_over_runs_and_a_one_run_baseline_is_said_assumed() -> None:
    def side(*values: float) -> Side:
        spec = {"name": "x", "checkpoint": None}
        return Side("x", [Run({"clean_acc": v}, f"r{i}", spec) for i, v in enumerate(values)])

    policy = Policy([Rule("max_drop", "clean_acc", 0.01)])
    report = compare(side(0.90), side(0.80, 0.81, 0.79), policy)
    check = report.checks[0]
    assert check.bounds[0].finding.test == "t-test over runs" and report.exit_code == 1
    assert any("one baseline run: assumed to vary" in n for n in check.notes)
    assert compare(side(0.90, 0.70, 0.95), side(0.80, 0.81, 0.79), policy).exit_code == 0  # noisy baseline


# ---------------------------------------------------------------------------------------------------- real runs
def test_outcomes_round_trip_and_match_every_accuracy_of_a_real_run(tmp_path: Path) -> None:
    mask = np.random.default_rng(0).random((3, 37)) < 0.5
    assert (unpack_mask(pack_mask(mask)) == mask).all()
    from core.spec import JobSpec
    from evaluation.runner import run_job

    run_job(JobSpec.model_validate(TINY), out_dir=tmp_path)
    data = json.loads((tmp_path / "result.json").read_text())
    fingerprint, masks = unpack_outcomes(data["info"]["outcomes"])
    assert fingerprint.startswith("sha256:") and data["info"]["outcomes"]["n"] == 100
    accuracies = {k for k in data["metrics"] if k.endswith("_acc") or "_acc@" in k} - {"train_acc"}
    assert set(masks) == accuracies  # clean, gaussian, pgd, certified
    for name, m in masks.items():
        assert m.mean() == pytest.approx(data["metrics"][name], abs=1e-6), name
    assert masks["gaussian_acc@0.1"].shape == (2, 100)
    assert not (masks["pgd_linf_acc@0.05"] & ~masks["clean_acc"]).any()  # robust ⇒ correct, sample by sample


def test_make_baseline_records_runs_and_noise_and_the_gate_uses_them(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(TINY))
    made = CliRunner().invoke(
        app, ["check", "--make-baseline", str(spec), "--repeats", "3", "--out", str(tmp_path / "b")]
    )
    assert made.exit_code == 0, made.output
    manifest = json.loads((tmp_path / "b" / "baseline.json").read_text())
    assert manifest["runs"] == [f"repeat-{i}/result.json" for i in range(3)]
    assert manifest["seeds"] == "train seeds 0, 1, 2"
    values = [load_result_file(tmp_path / "b" / f"repeat-{i}").metrics["clean_acc"] for i in range(3)]
    assert manifest["noise"]["clean_acc"]["std"] == pytest.approx(float(np.std(values, ddof=1)))
    assert manifest["noise"]["clean_acc"]["n"] == 3
    # a candidate trained once, with a fresh seed, against the 3-run baseline: the t-test over runs
    cand = tmp_path / "cand.json"
    cand.write_text(json.dumps({**TINY, "train": {**TINY["train"], "seed": 7}}))
    result = gate(cand, "--baseline", tmp_path / "b", "--max-drop", "clean_acc=0.5", "--summary", tmp_path / "s.md")
    assert result.exit_code == 0, text(result)
    assert "t-test over runs" in text(result) and "3 runs, train seeds 0, 1, 2" in text(result)
    assert "one candidate run: assumed to vary" in (tmp_path / "s.md").read_text()
    # the baseline's own weights evaluated again (the checkpoint step of the recipe): paired, nothing lost
    again = gate(spec, "--checkpoint", tmp_path / "b" / "repeat-0", "--baseline", tmp_path / "b" / "repeat-0",
                 "--max-drop", "clean_acc=0", "--max-drop", "pgd_*=0", "--max-drop", "gaussian_acc@0.1=0")  # fmt: skip
    assert again.exit_code == 0, text(again)
    assert "exact McNemar (0 lost, 0 gained of 100" in text(again) and "paired bootstrap" in text(again)
    bad = gate("--make-baseline", spec, "--repeats", 2)
    assert bad.exit_code == 2 and "--make-baseline needs --out" in text(bad)


def test_legacy_options_keep_working_and_a_lone_baseline_spread_is_said_ignored(tmp_path: Path) -> None:
    base = outcome_file(tmp_path / "b.json", {"clean_acc": np.ones(10, bool)})
    result = gate(
        "--candidate", base, "--baseline", base, "--max-drop", "clean_acc=0", "--baseline-spread", "candidate"
    )
    assert result.exit_code == 0 and "baseline_spread 'candidate' is ignored" in text(result)
    legacy = gate("--candidate", base, "--baseline", base, "--max-drop", "clean_acc=0", "--k", "2")
    assert legacy.exit_code == 0 and "legacy rule" in text(legacy)


def test_floors_over_several_runs_are_one_sided_t_tests() -> None:
    def side(*values: float) -> Side:
        return Side("x", [Run({"clean_acc": v}, f"r{i}") for i, v in enumerate(values)])

    floor = Policy([Rule("min", "clean_acc", 0.80)])
    assert compare(None, side(0.79, 0.81, 0.78), floor).exit_code == 0  # below on average, not significantly
    assert compare(None, side(0.70, 0.71, 0.69), floor).exit_code == 1
    found = compare(None, side(0.70, 0.71, 0.69), floor).checks[0].bounds[0].finding
    assert found.test == "one-sample t-test" and found.p == pytest.approx(stats.t.sf(0.10 / (0.01 / np.sqrt(3)), 2))
