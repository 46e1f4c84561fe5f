"""Apply a policy to a baseline and a candidate: pick each bound's test, adjust the p-values together, decide.

Which test (:mod:`cli.check.statistics`) a ``--max-drop`` bound gets depends on what the two sides hold:

1. **paired** — both sides have per-sample outcomes of the metric on the same test set (equal fingerprints) and
   each side is one model (one run, or runs of one checkpoint): exact McNemar for one run per side, else a paired
   bootstrap of the per-sample outcomes averaged over draws and runs. One trained run per side: the seed-to-seed
   variance is not estimated, and the two models are compared as they are (said in the report);
2. **over runs** — otherwise, when some side has two runs or more: a t-test of the runs' values with the
   seed-to-seed variance pooled over both sides (a one-run side is assumed to vary as much);
3. **unpaired** — one run per side with per-sample outcomes on different test sets: a two-proportion z test;
4. **exact** — one number per side and nothing to estimate noise from: the drop is compared with tol as it is.

A legacy policy (``k`` set) uses the old heuristic instead: drop > tol + k·√(s²/N + s_b²/M).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from cli.check import statistics as st
from cli.check.files import CheckError
from cli.check.inputs import Side
from cli.check.policy import HIGHER, Direction, Policy, Rule, metric_direction
from core.metrics import sort_key

EPS = 1e-12  # float slack: equal numbers never fail a zero tolerance
Verdict = Literal["pass", "regression", "error"]


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (0 for one value) and count of a metric over runs."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        n = len(values)
        mean = math.fsum(values) / n
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
        return cls(mean, std, n)

    @property
    def var_of_mean(self) -> float:
        return self.std**2 / self.n

    def __str__(self) -> str:
        return f"{self.mean:.4g}" if self.n == 1 else f"{self.mean:.4g} ± {self.std:.2g} (n={self.n})"


@dataclass
class Bound:
    """One tested bound of one metric: the drop (or the gap past a floor / ceiling), its tolerance, the test."""

    rule: Rule
    drop: float
    tol: float
    finding: st.Finding | None = None  # None under the legacy rule
    p_holm: float | None = None
    failed: bool = False
    allowance: float | None = None  # legacy rule: tol + k·SE

    @property
    def limit(self) -> str:
        """``drop ≤ 0.02`` / ``≥ 0.5`` / ``≤ 10`` (with the legacy rule's noise allowance)."""
        extra = self.allowance - self.tol if self.allowance is not None else 0.0
        if self.rule.kind == "max_drop":
            return f"≤ {self.tol:.3g}" + (f" + {extra:.3g} noise" if extra > 0 else "")
        sign = "≥" if self.rule.kind == "min" else "≤"
        more = f" {'−' if self.rule.kind == 'min' else '+'} {extra:.3g} noise" if extra > 0 else ""
        return f"{sign} {self.rule.value:.4g}{more}"


@dataclass
class MetricCheck:
    metric: str
    direction: Direction | None
    baseline: Stat | None
    candidate: Stat | None
    rules: list[Rule]
    verdict: Verdict = "pass"
    reasons: list[str] = field(default_factory=list)
    bounds: list[Bound] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.candidate is None:
            return None
        return self.candidate.mean - self.baseline.mean

    def fail(self, verdict: Verdict, reason: str) -> None:
        if verdict == "error" or self.verdict == "pass":
            self.verdict = verdict
        self.reasons.append(reason)


@dataclass
class Report:
    checks: list[MetricCheck]
    candidate: Side
    baseline: Side | None
    policy: Policy
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def k(self) -> float | None:
        return self.policy.k

    @property
    def alpha(self) -> float:
        return self.policy.alpha

    @property
    def regressions(self) -> list[MetricCheck]:
        return [c for c in self.checks if c.verdict == "regression"]

    @property
    def errors(self) -> list[MetricCheck]:
        return [c for c in self.checks if c.verdict == "error"]

    @property
    def exit_code(self) -> int:
        return 2 if self.errors else (1 if self.regressions else 0)

    @property
    def headline(self) -> str:
        if self.errors:
            return f"error: {len(self.errors)} metric(s) could not be checked ({_names(self.errors)})"
        if self.regressions:
            return f"regression in {len(self.regressions)} metric(s): {_names(self.regressions)}"
        return f"pass: {len(self.checks)} metric(s) within the policy"

    @property
    def rule_text(self) -> str:
        if self.policy.legacy:
            return f"legacy rule: drop > tol + k·SE, k = {self.policy.k:g} (no stated error rate)"
        return f"alpha = {self.alpha:g}: one-sided tests of drop > tol, Holm over {self.family_size} bound(s)"

    @property
    def family_size(self) -> int:
        return sum(1 for c in self.checks for b in c.bounds if b.finding is not None)


def _names(checks: Iterable[MetricCheck]) -> str:
    return ", ".join(c.metric for c in checks)


def _expand(rules: Sequence[Rule], names: set[str]) -> dict[str, dict[str, Rule]]:
    """metric → {kind → rule}; globs expand over the metrics either side has; an exact rule beats a glob."""
    per_metric: dict[str, dict[str, Rule]] = {}
    for rule in sorted(rules, key=lambda r: not r.is_pattern):  # globs first, exact names override them
        if rule.is_pattern:
            matched = sorted(n for n in names if fnmatch.fnmatchcase(n, rule.metric))
            if not matched:
                raise CheckError(f"{rule}: the pattern matches no metric of the baseline or the candidate")
        else:
            matched = [rule.metric]
        for metric in matched:
            per_metric.setdefault(metric, {})[rule.kind] = rule
    return per_metric


def spec_drift(baseline: Side | None, candidate: Side) -> list[str]:
    """Warnings when the two sides were evaluated differently (seeds aside): their numbers may not compare."""
    if baseline is None:
        return []
    a = baseline.runs[0].spec
    b = candidate.runs[0].spec
    if not isinstance(a, dict) or not isinstance(b, dict):
        return []

    def strip_seeds(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip_seeds(v) for k, v in value.items() if k != "seed"}
        return value

    warnings = []
    for section in ("dataset", "evaluate", "task"):
        if section == "dataset":
            left, right = a.get(section), b.get(section)  # the dataset seed picks the test set: it counts
        else:
            left, right = strip_seeds(a.get(section)), strip_seeds(b.get(section))
        if left is not None and right is not None and left != right:
            warnings.append(f"baseline and candidate differ in '{section}': their metrics may not be comparable")
    return warnings


def _per_sample_mean(masks: list[np.ndarray]) -> np.ndarray:
    """Each sample's outcome averaged over its draws (leading axes) and over the runs."""
    return np.mean([m.reshape(-1, m.shape[-1]).mean(axis=0) for m in masks], axis=0)


def _single_trained(side: Side) -> bool:
    return len(side.runs) == 1 and side.runs[0].trained is True


def drop_test(metric: str, baseline: Side, candidate: Side, drop: float, tol: float, sign: float, alpha: float):
    """The test of one ``--max-drop`` bound (module docstring) and the notes that say what it assumed."""
    notes: list[str] = []
    b_out, c_out = baseline.outcomes(metric), candidate.outcomes(metric)
    b_values, c_values = baseline.values(metric), candidate.values(metric)
    assert b_values is not None and c_values is not None
    if (b_out is None) != (c_out is None):
        missing = "baseline" if b_out is None else "candidate"
        notes.append(
            f"per-sample outcomes of {metric} are missing from the {missing} (a result.json from before they were "
            "stored, or a run without them): no paired test"
        )
    same_set = b_out is not None and c_out is not None and b_out[0] is not None and b_out[0] == c_out[0]
    if b_out is not None and c_out is not None and not same_set:
        notes.append("baseline and candidate were evaluated on different test sets: no paired test (unpaired rule)")
    if same_set and baseline.fixed_model and candidate.fixed_model:
        assert b_out is not None and c_out is not None
        b_masks, c_masks = b_out[1], c_out[1]
        if _single_trained(baseline) and _single_trained(candidate):
            notes.append(
                "one trained run per side: seed-to-seed variance is not estimated; the test compares these two "
                "trained models as they are (a retrained, unchanged model can fail; use a --make-baseline baseline)"
            )
        if len(b_masks) == 1 and len(c_masks) == 1 and b_masks[0].ndim == 1 and c_masks[0].ndim == 1:
            b, c = b_masks[0], c_masks[0]
            if sign < 0:
                b, c = c, b
            return st.mcnemar_drop(int((b & ~c).sum()), int((~b & c).sum()), b.size, tol), notes
        drops = sign * (_per_sample_mean(b_masks) - _per_sample_mean(c_masks))
        return st.paired_bootstrap_drop(drops, tol, alpha), notes
    if len(b_values) > 1 or len(c_values) > 1:
        if same_set:
            notes.append("runs of different training seeds: compared over runs (pairing cannot remove seed variance)")
        for label, side in (("baseline", baseline), ("candidate", candidate)):
            if len(side.runs) == 1:
                notes.append(f"one {label} run: assumed to vary from seed to seed as much as the other side's runs")
        return st.seed_t_test(b_values, c_values, tol, alpha, sign), notes
    if b_out is not None and c_out is not None and not same_set:
        b, c = b_out[1][0], c_out[1][0]
        if b.ndim == 1 and c.ndim == 1:
            return st.unpaired_proportions(b if sign > 0 else ~b, c if sign > 0 else ~c, tol, alpha), notes
    notes.append("one value per side and no per-sample outcomes to pair: compared as exact numbers (no noise estimate)")
    return st.exact_comparison(drop, tol), notes


def _legacy_drop(check: MetricCheck, bound: Bound, b, c, policy: Policy) -> None:
    """The heuristic rule: drop > tol + k·√(s²/N + s_b²/M) (s_b = s for one baseline run with baseline_spread
    "candidate", 0 with "zero")."""
    k = policy.k or 0.0
    var_b = c.std**2 if b.n == 1 and policy.baseline_spread == "candidate" else b.var_of_mean
    bound.allowance = bound.tol + k * math.sqrt(c.var_of_mean + var_b)
    bound.failed = bound.drop > bound.allowance + EPS


def compare(baseline: Side | None, candidate: Side, policy: Policy) -> Report:
    """Apply ``policy`` to every metric it names (module docstring); p-values adjusted by Holm over all bounds."""
    names = candidate.names() | (baseline.names() if baseline else set())
    checks = []
    for metric, rules in _expand(policy.rules, names).items():
        direction = metric_direction(metric, policy.directions)
        c_values = candidate.values(metric)
        b_values = baseline.values(metric) if baseline else None
        check = MetricCheck(
            metric,
            direction,
            Stat.of(b_values) if b_values else None,
            Stat.of(c_values) if c_values else None,
            list(rules.values()),
        )
        checks.append(check)
        if c_values is None:
            check.fail("error", f"{metric} is missing from the candidate ({candidate.label})")
        if "max_drop" in rules and b_values is None:
            where = baseline.label if baseline else "no baseline given"
            check.fail("error", f"{metric} is missing from the baseline ({where})")
        for side, values in (("candidate", c_values), ("baseline", b_values)):
            if values and not all(math.isfinite(v) for v in values):
                check.fail("error", f"{metric} is not finite in the {side}: {values}")
        if "max_drop" in rules and direction is None:
            check.fail(
                "error",
                f"{metric}: unknown direction (is higher or lower better?); name it in the policy file's 'direction'",
            )
        if check.verdict == "error" or check.candidate is None:
            continue
        c = check.candidate
        if "max_drop" in rules and check.baseline is not None and baseline is not None and direction is not None:
            b, rule = check.baseline, rules["max_drop"]
            sign = 1.0 if direction == HIGHER else -1.0
            tol = rule.value * abs(b.mean) if rule.relative else rule.value
            bound = Bound(rule, sign * (b.mean - c.mean), tol)
            if policy.legacy:
                _legacy_drop(check, bound, b, c, policy)
            else:
                bound.finding, notes = drop_test(metric, baseline, candidate, bound.drop, tol, sign, policy.alpha)
                check.notes += notes
            check.bounds.append(bound)
        for kind in ("min", "max"):
            if kind in rules:
                value = rules[kind].value
                bound = Bound(rules[kind], (value - c.mean) if kind == "min" else (c.mean - value), 0.0)
                if policy.legacy:
                    bound.allowance = (policy.k or 0.0) * math.sqrt(c.var_of_mean)
                    bound.failed = bound.drop > bound.allowance + EPS
                else:
                    bound.finding = st.bound_t_test(candidate.values(metric) or [], value, below=kind == "min")
                check.bounds.append(bound)
    _decide(checks, policy)
    checks.sort(key=lambda c: sort_key(c.metric))
    warnings = spec_drift(baseline, candidate) + list(policy.notes)
    for side in (baseline, candidate):
        for run in side.runs if side else ():
            if run.per_sample[2]:
                warnings.append(run.per_sample[2])
    return Report(checks, candidate, baseline, policy, warnings)


def _decide(checks: list[MetricCheck], policy: Policy) -> None:
    """Holm over every tested bound; a bound fails when its adjusted p ≤ alpha and its observed drop is beyond tol
    (so a drop within the tolerance never fails), or, under the legacy rule, when it is beyond the allowance."""
    tested = [b for c in checks for b in c.bounds if b.finding is not None]
    for bound, adjusted in zip(tested, st.holm([b.finding.p for b in tested]), strict=True):
        bound.p_holm = adjusted
        bound.failed = adjusted <= policy.alpha and bound.drop > bound.tol + EPS
    for check in checks:
        for bound in check.bounds:
            if bound.failed:
                check.fail("regression", _reason(check, bound, policy))


def _reason(check: MetricCheck, bound: Bound, policy: Policy) -> str:
    b, c = check.baseline, check.candidate
    assert c is not None
    if bound.rule.kind == "min":
        text = f"{check.metric} = {c.mean:.4g} is below the floor {bound.rule.value:.4g}"
    elif bound.rule.kind == "max":
        text = f"{check.metric} = {c.mean:.4g} is above the ceiling {bound.rule.value:.4g}"
    else:
        assert b is not None
        moved = "fell" if check.direction == HIGHER else "rose"
        text = f"{check.metric} {moved} by {bound.drop:.4g} ({b.mean:.4g} → {c.mean:.4g})"
        if bound.allowance is not None:
            k = f" + {policy.k:g}·σ/√N = {bound.allowance:.4g}" if bound.allowance > bound.tol else ""
            return f"{text}, more than the allowed {bound.tol:.4g}{k}"
        text += f", beyond the tolerance {bound.tol:.4g}"
    if bound.finding is None:
        return text
    f = bound.finding
    return f"{text}: {f.test} p = {f.p:.3g}, Holm-adjusted {bound.p_holm:.3g} ≤ alpha {policy.alpha:g} ({f.detail})"
