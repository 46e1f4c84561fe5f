"""The gate's tests. Each tests one bound of the policy and returns a :class:`Finding` with a p-value.

For ``--max-drop`` every test is one-sided, of

    H0: Δ ≤ tol   against   H1: Δ > tol,

where Δ is the candidate's **drop** (baseline − candidate for a higher-is-better metric, candidate − baseline for
a lower-is-better one) in the quantity the test is about, and tol the tolerance. A drop within tol is the null, so it
can fail the gate only as a false alarm, at most at the rate alpha; the gate also never fails a metric whose observed
drop is within tol (:func:`cli.check.compare.compare`). The p-values of every tested bound are then adjusted
together by :func:`holm`, which keeps the probability of *any* false alarm over all metrics at most alpha.

* :func:`mcnemar_drop` — one run per side, per-sample 0/1 outcomes on the same test set: exact McNemar.
* :func:`paired_bootstrap_drop` — per-sample outcomes averaged over draws or evaluation runs: paired bootstrap.
* :func:`seed_t_test` — several runs of different training (or evaluation) seeds: a t-test on the runs' values.
* :func:`unpaired_proportions` — one run per side on *different* test sets: a two-proportion z test.
* :func:`exact_comparison` — one number per side and no noise estimate: the numbers as they are.
* :func:`bound_t_test` — floors and ceilings: one-sample t-test of the candidate's runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

BOOTSTRAP_RESAMPLES = 5000
BOOTSTRAP_SEED = 0  # the gate's verdict must not depend on when it runs


@dataclass(frozen=True)
class Finding:
    """One test: ``test`` names it, ``p`` is its one-sided p-value, ``detail`` says what it saw (counts, standard
    error, degrees of freedom), ``lower`` is the one-sided (1 − alpha) lower confidence bound of the drop where the
    test gives one."""

    test: str
    p: float
    detail: str
    lower: float | None = None


def mcnemar_drop(lost: int, gained: int, n: int, tol: float) -> Finding:
    """Exact one-sided McNemar test of a drop larger than ``tol`` in paired 0/1 outcomes (McNemar, 1947).

    ``lost``: samples right in the baseline and wrong in the candidate; ``gained``: the reverse; ``n``: samples.
    The drop is Δ = p_lost − p_gained. Given the m = lost + gained discordant samples, ``lost`` ~ Binomial(m, q)
    with q = p_lost / (p_lost + p_gained); Δ = tol means q = ½ + tol / (2ψ), ψ = p_lost + p_gained the discordance
    rate, which is estimated by m / n. So the null tested is "q ≤ ½ + tol·n / (2m)": at tol = 0 exactly McNemar's
    exact test (q ≤ ½, no nuisance parameter); for tol > 0 exact conditional on the observed discordance.
    """
    m = lost + gained
    if m == 0:
        return Finding("exact McNemar", 1.0, f"0 lost, 0 gained of {n}")
    q0 = 0.5 + tol * n / (2 * m)
    detail = f"{lost} lost, {gained} gained of {n}"
    if q0 >= 1:  # a drop above tol needs more discordant samples than there are
        return Finding("exact McNemar", 1.0, detail)
    p = stats.binomtest(lost, m, q0, alternative="greater").pvalue
    return Finding("exact McNemar", float(p), detail)


def paired_bootstrap_drop(drops: np.ndarray, tol: float, alpha: float) -> Finding:
    """Paired bootstrap over samples (Efron & Tibshirani, 1993, percentile method) of the mean per-sample drop.

    ``drops``: baseline − candidate outcome of each test sample (each side's outcomes averaged over its Gaussian
    draws or evaluation runs). The samples are resampled with replacement; p = (1 + #{resampled mean ≤ tol}) /
    (B + 1), so the test rejects at level a when the one-sided (1 − a) percentile lower bound of Δ is above tol.
    """
    drops = np.asarray(drops, dtype=np.float64)
    n = len(drops)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = np.empty(BOOTSTRAP_RESAMPLES)
    chunk = max(1, 2_000_000 // max(n, 1))
    for start in range(0, BOOTSTRAP_RESAMPLES, chunk):
        stop = min(start + chunk, BOOTSTRAP_RESAMPLES)
        means[start:stop] = drops[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    p = (1 + int(np.count_nonzero(means <= tol + 1e-12))) / (BOOTSTRAP_RESAMPLES + 1)
    lower = float(np.quantile(means, alpha))
    return Finding("paired bootstrap", p, f"{n} paired samples, {BOOTSTRAP_RESAMPLES} resamples", lower)


def seed_t_test(base: Sequence[float], cand: Sequence[float], tol: float, alpha: float, sign: float) -> Finding:
    """One-sided two-sample t-test of a drop larger than ``tol`` between the runs' values (Student, pooled variance).

    The runs of each side are independent draws (training and evaluation seeds); their spread estimates the
    seed-to-seed variance s², pooled over both sides (a one-run side contributes no degree of freedom and is assumed
    to vary as much as the other side). SE = s·√(1/M + 1/N), t = (drop − tol) / SE with M + N − 2 degrees of freedom.
    ``sign``: +1 when higher is better (drop = mean(base) − mean(cand)), −1 when lower is better.
    """
    b, c = np.asarray(base, dtype=np.float64), np.asarray(cand, dtype=np.float64)
    drop = sign * (b.mean() - c.mean())
    df = len(b) + len(c) - 2
    ss = float(((b - b.mean()) ** 2).sum() + ((c - c.mean()) ** 2).sum())
    s = math.sqrt(ss / df) if df > 0 else 0.0
    se = s * math.sqrt(1 / len(b) + 1 / len(c))
    detail = f"s = {s:.3g} over {len(b)} + {len(c)} runs, df = {df}"
    if se == 0:
        return Finding("t-test over runs", 0.0 if drop > tol else 1.0, detail + " (no spread)", drop)
    p = float(stats.t.sf((drop - tol) / se, df))
    return Finding("t-test over runs", p, detail, drop - float(stats.t.ppf(1 - alpha, df)) * se)


def unpaired_proportions(base: np.ndarray, cand: np.ndarray, tol: float, alpha: float) -> Finding:
    """One-sided z test (Wald) of a drop larger than ``tol`` between two proportions measured on *different* test
    sets: z = (p_b − p_c − tol) / √(p_b(1 − p_b)/n_b + p_c(1 − p_c)/n_c)."""
    pb, pc = float(np.mean(base)), float(np.mean(cand))
    se = math.sqrt(pb * (1 - pb) / base.size + pc * (1 - pc) / cand.size)
    drop = pb - pc
    detail = f"{base.size} vs {cand.size} samples"
    if se == 0:
        return Finding("unpaired z test", 0.0 if drop > tol else 1.0, detail, drop)
    p = float(stats.norm.sf((drop - tol) / se))
    return Finding("unpaired z test", p, detail, drop - float(stats.norm.ppf(1 - alpha)) * se)


def exact_comparison(drop: float, tol: float) -> Finding:
    """No noise estimate (one number per side): fails when the drop exceeds tol (p = 0), passes otherwise (p = 1)."""
    return Finding("exact comparison", 0.0 if drop > tol else 1.0, "one value per side, no noise estimate")


def bound_t_test(values: Sequence[float], bound: float, below: bool) -> Finding:
    """Floors (``below``: H1 is "the candidate's expected value is below ``bound``") and ceilings (H1: above), by a
    one-sample t-test over the candidate's runs; one run is compared exactly."""
    v = np.asarray(values, dtype=np.float64)
    gap = (bound - v.mean()) if below else (v.mean() - bound)  # > 0: on the wrong side of the bound
    if len(v) < 2 or v.std(ddof=1) == 0:
        return Finding("exact comparison", 0.0 if gap > 0 else 1.0, f"{len(v)} run(s), no spread")
    se = v.std(ddof=1) / math.sqrt(len(v))
    return Finding("one-sample t-test", float(stats.t.sf(gap / se, len(v) - 1)), f"{len(v)} runs, df = {len(v) - 1}")


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm, 1979, "A simple sequentially rejective multiple test procedure"):
    rejecting every hypothesis whose adjusted p is ≤ alpha keeps the family-wise error rate at most alpha."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


__all__ = [
    "Finding",
    "bound_t_test",
    "exact_comparison",
    "holm",
    "mcnemar_drop",
    "paired_bootstrap_drop",
    "seed_t_test",
    "unpaired_proportions",
]
