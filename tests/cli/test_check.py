"""``robustlab check``, the CI regression gate, on real runs of a tiny spirals model: identical results pass (0), a
model made less robust fails on the metric that got worse (1), malformed input is exit 2 with a message; the
noise-aware rule ``baseline − mean > tol + k·σ/√N``, metric directions, JUnit XML and the Markdown summary; one
test against the live API (``--baseline JOB_ID --server URL``)."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import torch
from check_helpers import gate, text
from safetensors import safe_open
from safetensors.torch import save_file

from cli.check import CheckError, Policy, Rule, Side, compare, metric_direction, parse_rule
from cli.check import Run as CheckRun
from core.metrics import CATALOG
from evaluation.outcomes import unpack_outcomes

# Trains in < 1 s; 150 epochs fit the spirals to ~0.8 clean accuracy, so there is robustness to lose.
SPEC: dict[str, Any] = {
    "name": "gate-tiny",
    "dataset": {"name": "spirals", "n_train": 100, "n_test": 100},
    "model": {"family": "explicit", "width": 8, "depth": 4, "h": 0.3},
    "train": {"epochs": 150, "lr": 0.02},
    "evaluate": {
        "gaussian": {"sigmas": [0.1], "repeats": 2},
        "pgd": {"norm": ["Linf", "L2"], "eps": [0.05, 0.1], "steps": 10},
        "certified": {"eps": [0.05]},
    },
}
EXACT = ["--max-drop", "clean_acc=0", "--max-drop", "pgd_*=0", "--max-drop", "gaussian_acc@0.1=0"]


def junit(path: Path) -> dict[str, str]:
    """metric → "pass" / "failure" / "error" from a JUnit file (which must parse)."""
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    cases = root.findall("./testsuite/testcase")
    return {
        c.get("name"): "failure"
        if c.find("failure") is not None
        else "error"
        if c.find("error") is not None
        else "pass"
        for c in cases
    }


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def result_file(path: Path, **metrics: float) -> Path:
    return write_json(path, {"name": "synthetic", "metrics": metrics})


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models: one thread is faster than two fighting over shared CI cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    """A `robustlab run --out` directory of the tiny spec (result.json, model.safetensors, spec.json)."""
    from core.spec import JobSpec
    from evaluation.runner import run_job

    out = tmp_path_factory.mktemp("baseline")
    run_job(JobSpec.model_validate(SPEC), out_dir=out)
    write_json(out / "candidate-spec.json", SPEC)
    return out


def perturbed(baseline: Path, target: Path, scale: float = 0.1, seed: int = 0) -> Path:
    """The baseline's weights plus Gaussian noise (scale × the tensor's mean |w|): same clean accuracy, weaker."""
    with safe_open(str(baseline / "model.safetensors"), framework="pt") as f:
        meta = f.metadata()
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    g = torch.Generator().manual_seed(seed)
    noisy = {name: t + scale * t.abs().mean() * torch.randn(t.shape, generator=g) for name, t in tensors.items()}
    target.mkdir(parents=True, exist_ok=True)
    save_file(noisy, str(target / "model.safetensors"), metadata=meta)
    return target


# ---------------------------------------------------------------------------------------------------- pass / fail
def test_identical_results_pass_and_write_junit_and_summary(baseline: Path, tmp_path: Path) -> None:
    out_xml, out_md = tmp_path / "check.xml", tmp_path / "check.md"
    result = gate(
        "--candidate", baseline / "result.json", "--baseline", baseline, *EXACT,
        "--min", "clean_acc=0.5", "--junit", out_xml, "--summary", out_md,
    )  # fmt: skip
    assert result.exit_code == 0, text(result)
    assert "pass: 6 metric(s)" in text(result)
    cases = junit(out_xml)
    assert set(cases) == {
        "clean_acc",
        "gaussian_acc@0.1",
        *(f"pgd_{n}_acc@{e}" for n in ("linf", "l2") for e in (0.05, 0.1)),
    }
    assert set(cases.values()) == {"pass"}
    md = out_md.read_text()
    assert md.startswith("### ✅ robustlab check") and "| `pgd_linf_acc@0.1` | ↑ |" in md


def test_the_same_checkpoint_evaluated_again_passes_exactly(baseline: Path) -> None:
    result = gate(baseline / "candidate-spec.json", "--checkpoint", baseline, "--baseline", baseline / "result.json",
                  *EXACT, "--max-drop", "certified_l2_acc@0.05=0", "--max-drop", "lipschitz_bound=0")  # fmt: skip
    assert result.exit_code == 0, text(result)
    assert "checkpoint" in text(result)


def test_noisy_weights_fail_on_the_robust_metrics_not_on_clean_accuracy(baseline: Path, tmp_path: Path) -> None:
    weak = perturbed(baseline, tmp_path / "weak")
    out_xml, out_md = tmp_path / "check.xml", tmp_path / "check.md"
    result = gate(
        baseline / "candidate-spec.json", "--checkpoint", weak, "--baseline", baseline,
        "--max-drop", "clean_acc=0.05", "--max-drop", "pgd_linf_acc@0.05=0.02", "--max-drop", "lipschitz_bound=1%",
        "--junit", out_xml, "--summary", out_md,
    )  # fmt: skip
    assert result.exit_code == 1, text(result)
    # lower is better for the Lipschitz bound: its *rise* is the regression; 18 PGD samples lost, 5 gained of 100:
    # exact McNemar against tol 0.02 (a tol of 0.05 is not rejected from 100 samples)
    assert junit(out_xml) == {"clean_acc": "pass", "pgd_linf_acc@0.05": "failure", "lipschitz_bound": "failure"}
    assert "pgd_linf_acc@0.05 fell by" in text(result) and "lipschitz_bound rose by" in text(result)
    md = out_md.read_text()
    assert md.startswith("### ❌") and "| `pgd_linf_acc@0.05` | ↑ |" in md and "❌ regression" in md
    failure = ET.parse(out_xml).getroot().find("./testsuite/testcase[@name='pgd_linf_acc@0.05']/failure")
    assert failure is not None and failure.get("type") == "RobustnessRegression" and "fell by" in failure.get("message")


def test_far_fewer_epochs_fail_on_clean_accuracy(baseline: Path, tmp_path: Path) -> None:
    short = write_json(tmp_path / "short.json", {**SPEC, "train": {"epochs": 5, "lr": 0.02}})
    out_xml = tmp_path / "check.xml"
    result = gate(short, "--baseline", baseline, "--max-drop", "clean_acc=0.05", "--junit", out_xml)
    assert result.exit_code == 1, text(result)
    assert junit(out_xml) == {"clean_acc": "failure"}


def test_repeats_vary_train_and_eval_seeds_and_compare_the_mean(baseline: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    spec = write_json(tmp_path / "spec.json", {**SPEC, "train": {"epochs": 50, "lr": 0.02}})
    result = gate(spec, "--repeats", 3, "--out", out, "--baseline", baseline,
                  "--max-drop", "clean_acc=0.5", "--summary", tmp_path / "s.md")  # fmt: skip
    assert result.exit_code == 0, text(result)
    specs = [json.loads((out / f"repeat-{i}" / "spec.json").read_text()) for i in range(3)]
    assert [s["train"]["seed"] for s in specs] == [0, 1, 2]
    assert [s["evaluate"]["pgd"]["seed"] for s in specs] == [0, 1, 2]
    assert [s["evaluate"]["gaussian"]["seed"] for s in specs] == [0, 1, 2]
    values = [json.loads((out / f"repeat-{i}" / "result.json").read_text())["metrics"]["clean_acc"] for i in range(3)]
    assert f"{sum(values) / 3:.4g} ±" in text(result) and "(n=3)" in text(result)
    assert "train seeds 0, 1, 2" in (tmp_path / "s.md").read_text()


# ---------------------------------------------------------------------------------------------------- noise rule
@pytest.mark.parametrize(
    ("runs", "k", "code"),
    [
        ([0.75], None, 1),  # one run: drop 0.05 > tol 0.02
        # default (statistical) rule: t-test over runs, the one baseline run assumed as noisy as a candidate run
        ([0.745, 0.75, 0.755], None, 1),  # tight spread: t = 0.03 / (0.005·√(1 + 1/3)) = 5.2, df 2, p = 0.018
        ([0.74, 0.75, 0.76], None, 0),  # t = 2.6, p = 0.061 > 0.05: not enough evidence from 3 runs
        ([0.60, 0.90, 0.75], None, 0),  # flaky: t = 0.17, p = 0.44
        ([0.60, 0.90, 0.75], 0, 1),  # k = 0 ignores the spread
        ([0.60, 0.90, 0.75], 0.3, 1),  # 0.02 + 0.3·0.15/√3 = 0.046 < 0.05
        ([0.60, 0.90, 0.75], 0.4, 0),  # 0.02 + 0.4·0.15/√3 = 0.0546 ≥ 0.05
    ],
)
def test_a_metric_regresses_only_when_significant_or_beyond_tol_plus_k_se(tmp_path: Path, runs, k, code) -> None:
    base = result_file(tmp_path / "base.json", clean_acc=0.80)
    files = [result_file(tmp_path / f"c{i}.json", clean_acc=v) for i, v in enumerate(runs)]
    args = [a for f in files for a in ("--candidate", f)] + ([] if k is None else ["--k", k])
    result = gate(*args, "--baseline", base, "--max-drop", "clean_acc=0.02")
    assert result.exit_code == code, text(result)


def test_noise_allowance_matches_the_formula_and_pools_baseline_spread() -> None:
    def side(*values: float) -> Side:
        return Side("x", [CheckRun({"pgd_linf_acc@0.1": v}, "x") for v in values])

    rule = [Rule("max_drop", "pgd_linf_acc@0.1", 0.01)]
    candidate = side(0.70, 0.80)  # mean 0.75, s = 0.0707, s/√2 = 0.05
    # 0.80 − 0.75 = 0.05 vs 0.01 + k·0.05: k = 0.8 → 0.05 (pass, not strictly greater), k = 0.79 → fail
    assert compare(side(0.80), candidate, Policy(rule, k=0.8)).exit_code == 0
    assert compare(side(0.80), candidate, Policy(rule, k=0.79)).exit_code == 1
    # two baseline runs with the same spread: allowance k·√(0.05² + 0.05²)
    pooled = compare(side(0.85, 0.75), candidate, Policy(rule, k=0.57))
    assert pooled.exit_code == 0 and math.isclose(pooled.checks[0].delta, -0.05)
    assert compare(side(0.85, 0.75), candidate, Policy(rule, k=0.56)).exit_code == 1
    # one baseline run taken as noisy as a candidate run: allowance k·s·√(1/2 + 1) = k·0.0866
    assert compare(side(0.80), candidate, Policy(rule, k=0.47, baseline_spread="candidate")).exit_code == 0
    assert compare(side(0.80), candidate, Policy(rule, k=0.45, baseline_spread="candidate")).exit_code == 1
    assert compare(side(0.80), candidate, Policy(rule, k=0.47)).exit_code == 1


def test_baseline_spread_option_and_policy_key(tmp_path: Path) -> None:
    base = result_file(tmp_path / "base.json", clean_acc=0.80)
    files = [
        a
        for i, v in enumerate([0.70, 0.80])
        for a in ("--candidate", result_file(tmp_path / f"c{i}.json", clean_acc=v))
    ]
    args = [*files, "--baseline", base, "--max-drop", "clean_acc=0.01", "--k", "0.47"]
    assert gate(*args).exit_code == 1
    spread = gate(*args, "--baseline-spread", "candidate", "--summary", tmp_path / "s.md")
    assert spread.exit_code == 0, text(spread)
    assert "as noisy as a candidate run" in (tmp_path / "s.md").read_text()
    policy = write_json(
        tmp_path / "p.json", {"max_drop": {"clean_acc": 0.01}, "k": 0.47, "baseline_spread": "candidate"}
    )
    assert gate(*files, "--baseline", base, "--policy", policy).exit_code == 0
    assert gate(*args, "--baseline-spread", "bogus").exit_code == 2


# ---------------------------------------------------------------------------------------------------- directions
def test_the_gate_reads_which_way_is_better_from_the_metric_catalog() -> None:
    for kind in CATALOG.values():
        name = f"{kind.name}@0.1" if kind.level else kind.name
        assert metric_direction(name) == kind.better, name
    assert metric_direction("mystery") is None and metric_direction("some_new_acc@0.1") is None
    assert metric_direction("some_new_acc@0.1", {"some_new_*": "higher"}) == "higher"
    assert metric_direction("clean_acc", {"clean_*": "lower"}) == "lower"  # a policy file's direction wins


@pytest.mark.parametrize(("value", "code"), [(12.0, 1), (10.5, 0), (8.0, 0)])
def test_lower_is_better_metrics_fail_on_a_rise(tmp_path: Path, value: float, code: int) -> None:
    base = result_file(tmp_path / "b.json", lipschitz_bound=10.0, train_seconds=1.0)
    cand = result_file(tmp_path / "c.json", lipschitz_bound=value, train_seconds=1.0)
    result = gate("--candidate", cand, "--baseline", base, "--max-drop", "lipschitz_bound=1", "--max-drop",
                  "train_seconds=50%")  # fmt: skip
    assert result.exit_code == code, text(result)


def test_floors_and_ceilings_need_no_baseline(tmp_path: Path) -> None:
    cand = result_file(tmp_path / "c.json", clean_acc=0.82, lipschitz_bound=5.0)
    assert gate("--candidate", cand, "--min", "clean_acc=0.8", "--max", "lipschitz_bound=6").exit_code == 0
    result = gate("--candidate", cand, "--min", "clean_acc=0.9", "--max", "lipschitz_bound=6")
    assert result.exit_code == 1 and "below the floor 0.9" in text(result)
    assert gate("--candidate", cand, "--max", "lipschitz_bound=4").exit_code == 1


def test_unknown_direction_is_an_error_unless_the_policy_names_it(tmp_path: Path) -> None:
    base = result_file(tmp_path / "b.json", mystery=1.0)
    cand = result_file(tmp_path / "c.json", mystery=0.5)
    result = gate("--candidate", cand, "--baseline", base, "--max-drop", "mystery=0.1")
    assert result.exit_code == 2 and "unknown direction" in text(result)
    policy = write_json(tmp_path / "p.json", {"max_drop": {"mystery": 0.1}, "direction": {"mystery": "lower"}})
    assert gate("--candidate", cand, "--baseline", base, "--policy", policy).exit_code == 0


# ---------------------------------------------------------------------------------------------------- policy files
def test_yaml_policy_with_globs_floors_and_k(baseline: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("max_drop:\n  clean_acc: 0.01\n  'pgd_*': 0.0\nmin:\n  clean_acc: 0.5\nk: 3\n")
    result = gate("--candidate", baseline / "result.json", "--baseline", baseline, "--policy", policy)
    assert result.exit_code == 0, text(result)
    assert "k = 3" in text(result) and "pgd_l2_acc@0.1" in text(result)
    # the command line replaces the file's rule for the same metric
    strict = gate("--candidate", baseline / "result.json", "--baseline", baseline, "--policy", policy,
                  "--min", "clean_acc=0.99")  # fmt: skip
    assert strict.exit_code == 1


def test_parse_rule() -> None:
    assert parse_rule("max_drop", "pgd_linf_acc@0.1=0.02") == Rule("max_drop", "pgd_linf_acc@0.1", 0.02)
    assert parse_rule("max_drop", "clean_acc=5%") == Rule("max_drop", "clean_acc", 0.05, relative=True)
    assert parse_rule("min", "certified_l2_acc@0.05=0.3").value == 0.3
    for bad in ("clean_acc", "clean_acc:0.1", "=0.1", "clean_acc=", "clean acc=0.1", "clean_acc=nan", "clean_acc=-1"):
        with pytest.raises(CheckError):
            parse_rule("max_drop", bad)
    with pytest.raises(CheckError, match="percentage"):
        parse_rule("min", "clean_acc=5%")


# ---------------------------------------------------------------------------------------------------- exit 2
def test_malformed_inputs_exit_2_with_a_message(baseline: Path, tmp_path: Path) -> None:
    res = baseline / "result.json"
    no_pgd = write_json(tmp_path / "no_pgd.json", {"metrics": {"clean_acc": 0.8}})
    not_result = write_json(tmp_path / "not_result.json", {"hello": 1})
    bad_theta = write_json(tmp_path / "theta.json", {**SPEC, "model": {"family": "implicit", "theta": 1.5}})
    not_json = tmp_path / "broken.json"
    not_json.write_text("{not json")
    bad_policy = write_json(tmp_path / "policy.json", {"max_drop": {"clean_acc": 0.1}, "maximum": {}})
    cases = [
        (["--candidate", res, "--baseline", tmp_path / "nope.json", "--max-drop", "clean_acc=0.1"],
         "baseline file not found"),
        (["--candidate", tmp_path / "nope.json", "--baseline", res, "--max-drop", "clean_acc=0.1"],
         "result file not found"),
        ([tmp_path / "nope.json", "--baseline", res, "--max-drop", "clean_acc=0.1"], "spec file not found"),
        (["--candidate", res, "--baseline", res, "--max-drop", "clean_acc:0.1"], "expects METRIC=VALUE"),
        (["--candidate", res, "--baseline", res, "--max-drop", "clean_acc=abc"], "'abc' is not a number"),
        (["--candidate", res, "--baseline", res, "--max-drop", "clean_acc=-0.1"], "must be ≥ 0"),
        (["--candidate", no_pgd, "--baseline", res, "--max-drop", "pgd_linf_acc@0.1=0.1"],
         "pgd_linf_acc@0.1 is missing from the candidate"),
        (["--candidate", res, "--baseline", no_pgd, "--max-drop", "pgd_linf_acc@0.1=0.1"],
         "pgd_linf_acc@0.1 is missing from the baseline"),
        (["--candidate", res, "--baseline", res, "--max-drop", "pgd_linf_acc@0.3=0.1"], "is missing from the"),
        (["--candidate", res, "--baseline", res, "--max-drop", "psnr_*=0.1"], "matches no metric"),
        (["--candidate", not_result, "--baseline", res, "--max-drop", "clean_acc=0.1"], "is not a robustlab result"),
        ([bad_theta, "--baseline", res, "--max-drop", "clean_acc=0.1"],
         "model.theta: Input should be less than or equal to 1"),
        ([not_json, "--baseline", res, "--max-drop", "clean_acc=0.1"], "is not valid JSON"),
        (["--candidate", res, "--baseline", res, "--policy", bad_policy], "maximum: Extra inputs are not permitted"),
        (["--candidate", res, "--baseline", res], "no policy"),
        (["--baseline", res, "--max-drop", "clean_acc=0.1"], "no candidate"),
        (["--candidate", res, "--max-drop", "clean_acc=0.1"], "compares with a baseline"),
        (["--candidate", res, "--repeats", "3", "--baseline", res, "--max-drop", "clean_acc=0.1"],
         "need a candidate SPEC"),
        (["--candidate", res, "--baseline", "3f2a9c", "--server", "http://127.0.0.1:9", "--max-drop", "clean_acc=0"],
         "cannot reach the robustlab server"),
        ([baseline / "candidate-spec.json", "--checkpoint", tmp_path / "no-weights", "--baseline", res,
          "--max-drop", "clean_acc=0.1"], "checkpoint not found"),
    ]  # fmt: skip
    for args, message in cases:
        out_xml = tmp_path / "junit.xml"
        out_xml.unlink(missing_ok=True)
        result = gate(*args, "--junit", out_xml)
        assert result.exit_code == 2, (args, text(result))
        assert message in text(result), (args, text(result))
        if out_xml.exists():  # a metric missing on one side still leaves a report naming it as an error
            assert "error" in junit(out_xml).values()


# ---------------------------------------------------------------------------------------------------- live server
@pytest.mark.services
@pytest.mark.e2e
def test_baseline_job_id_and_tag_on_the_server(pg_stack, baseline: Path, tmp_path: Path) -> None:
    spec = {**SPEC, "name": "gate-main", "train": {"epochs": 60, "lr": 0.02}}
    job = pg_stack.submit(spec)
    assert pg_stack.wait(job["id"])["status"] == "succeeded"
    spec_file = write_json(tmp_path / "spec.json", spec)
    out_xml = tmp_path / "check.xml"

    # the API's results carry the per-sample outcomes the paired tests need
    with pg_stack.client() as c:
        results = c.get(f"/api/v1/jobs/{job['id']}/results").json()
    fingerprint, masks = unpack_outcomes(results["info"]["outcomes"])
    assert fingerprint.startswith("sha256:") and masks["clean_acc"].mean() == pytest.approx(
        results["metrics"]["clean_acc"]
    )

    # the same spec on the server (a succeeded job with its hash answers at once): identical numbers, paired
    same = gate(spec_file, "--baseline", job["id"], "--server", pg_stack.base_url, *EXACT, "--junit", out_xml)
    assert same.exit_code == 0, text(same)
    assert f"job {job['id']}" in text(same) and set(junit(out_xml).values()) == {"pass"}
    assert "exact McNemar (0 lost, 0 gained of 100" in text(same)

    # a worse candidate, run by the worker under another name, against the newest job tagged "gate-main"
    # (one trained run per side: exact McNemar on the 100 test points, which needs a clear drop)
    short = write_json(tmp_path / "short.json", {**spec, "train": {"epochs": 1, "lr": 0.02}})
    worse = gate(short, "--baseline-tag", "gate-main", "--candidate-name", "gate-pr", "--server", pg_stack.base_url,
                 "--max-drop", "clean_acc=0.01", "--junit", out_xml, "--timeout", 120)  # fmt: skip
    assert worse.exit_code == 1, text(worse)
    assert junit(out_xml) == {"clean_acc": "failure"} and "newest succeeded 'gate-main'" in text(worse)

    # a local checkpoint is uploaded and evaluated by the worker: the same weights, the same clean accuracy
    uploaded = gate(baseline / "candidate-spec.json", "--checkpoint", baseline, "--server", pg_stack.base_url,
                    "--baseline", baseline / "result.json", "--max-drop", "clean_acc=0", "--timeout", 120)  # fmt: skip
    assert uploaded.exit_code == 0, text(uploaded)
    assert "as artifact:" in text(uploaded)

    unknown = gate(spec_file, "--baseline", "no-such-job", "--server", pg_stack.base_url, *EXACT)
    assert unknown.exit_code == 2 and "not found" in text(unknown)
