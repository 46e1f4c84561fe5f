"""Randomized smoothing: certified L2 robustness of the smoothed classifier, for any model family.

Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via Randomized Smoothing" (ICML 2019): the smoothed
classifier of a base classifier f is g(x) = argmax_c P(f(x + δ) = c), δ ~ N(0, σ²I). If the top class has
probability at least p_A ≥ ½, g is constant within the L2 radius σ·Φ⁻¹(p_A) of x (their Theorem 1 with
p_B = 1 − p_A). It needs nothing but forward passes, so it certifies implicit networks as they are, and
explicit or Hamiltonian ones whose product of layer norms is far too loose for a Lipschitz margin (beside which
the job reports it: the Lipschitz margin certifies the network itself, deterministically; smoothing certifies g,
each certificate with probability ≥ 1 − α)::

    from evaluation.smoothing import certify
    c_hat, radius, counts = certify(model, x, [0.25], n0=100, n=10_000, alpha=0.001, batch=1000, seed=0)

:func:`certify` and :func:`predict` are the paper's pseudocode (CERTIFY and PREDICT): the class is selected
from ``n0`` draws, its probability bounded from ``n`` *other* draws by the one-sided Clopper–Pearson bound
(:func:`clopper_pearson_lower`), and CERTIFY abstains when the bound is ≤ ½; PREDICT returns the top class of ``n``
draws when a two-sided binomial test of its count against the runner-up's rejects ½ at level α. In a job,
PREDICT counts CERTIFY's ``n`` estimation draws (each procedure sees ``n`` i.i.d. draws, as in the paper, so
each keeps its guarantee; sharing them halves the cost). Every test point draws its own noise from a generator
seeded by (seed, phase, point), in blocks of :data:`NOISE_BLOCK` rows, so the numbers are bitwise reproducible on
a CPU and the draws do not depend on ``batch`` (how many noisy copies go through one forward pass); every σ
scales the same standard-normal draws. The noise is not clipped to the data's range (as in the
paper): the certificate is about the base classifier as it is applied to x + δ.

With ``n`` draws the largest certifiable radius is σ·Φ⁻¹(α^{1/n}) (:func:`max_radius`: all draws agree); a
requested ε at or above it gets a warning in the result, not a failure.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import scipy
import torch
from scipy.stats import beta, binomtest, norm
from torch import nn

from core.metrics import metric_key, parse
from evaluation.certified import QUANTILES, linear_quantiles
from evaluation.registry import CLASSIFICATION, Context, at_most, register_evaluation, within

#: this evaluation's protocol revision: bump it when a change alters its numbers on purpose (core/protocol.py)
PROTOCOL_REVISION = 1

#: rows of noise one test point draws at a time (part of the protocol: the draws do not depend on ``batch``)
NOISE_BLOCK = 1024
SELECTION, ESTIMATION = 0, 1  # the two phases of CERTIFY draw independent noise
ABSTAIN = -1


def clopper_pearson_lower(successes: np.ndarray, trials: int, alpha: float) -> np.ndarray:
    """The one-sided (1 − α) Clopper–Pearson lower confidence bound on a binomial proportion: the α quantile of
    Beta(k, n − k + 1), 0 for k = 0 (Cohen et al., CERTIFY's LowerConfBound; their code's
    ``proportion_confint(k, n, alpha=2α, method="beta")[0]``). Exactly the p with P(Bin(n, p) ≥ k) = α."""
    k = np.asarray(successes, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bound = beta.ppf(alpha, np.maximum(k, 1.0), trials - k + 1.0)
    return np.where(k > 0, bound, 0.0)


def binomial_p_value(n_a: np.ndarray, n_b: np.ndarray) -> np.ndarray:
    """Two-sided p-value of the exact binomial test of ``n_a`` successes in ``n_a + n_b`` trials against p = ½
    (Cohen et al., PREDICT's BinomPValue; scipy's ``binomtest``), one call per distinct pair."""
    pairs = np.stack([np.asarray(n_a, dtype=np.int64), np.asarray(n_b, dtype=np.int64)], axis=-1)
    unique, inverse = np.unique(pairs.reshape(-1, 2), axis=0, return_inverse=True)
    values = np.array([binomtest(int(a), int(a + b), 0.5).pvalue if a + b > 0 else 1.0 for a, b in unique])
    return values[inverse.ravel()].reshape(pairs.shape[:-1])


def smoothed_radius(p_lower: np.ndarray, sigma: float) -> np.ndarray:
    """σ·Φ⁻¹(p_A): the L2 radius within which the smoothed classifier keeps its class when its top class has
    probability ≥ p_A (Cohen et al., Theorem 1 with p_B = 1 − p_A; CERTIFY's radius)."""
    return sigma * norm.ppf(p_lower)


def max_radius(sigma: float, n: int, alpha: float) -> float:
    """σ·Φ⁻¹(α^{1/n}): the largest radius CERTIFY can return with ``n`` draws (all of them agree, so the
    Clopper–Pearson bound is α^{1/n})."""
    return float(sigma * norm.ppf(alpha ** (1.0 / n)))


_MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    """One SplitMix64 output (Steele, Lea & Flood, OOPSLA 2014): a bijective 64-bit mix, the usual way to derive
    independent generator seeds from consecutive integers."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def point_seed(seed: int, phase: int, index: int) -> int:
    """The noise seed of one test point in one phase: SplitMix64 chained over (seed, phase, point), 63 bits (a
    fraction of a microsecond, where NumPy's SeedSequence takes ~0.3 ms: as long as drawing 1000 digits)."""
    return _splitmix64(_splitmix64(_splitmix64(seed) ^ phase) ^ index) >> 1


def _noise_blocks(points: int, num: int, shape: tuple[int, ...], seed: int, phase: int, dtype) -> Iterator:
    """``(point, standard-normal rows)`` for each test point in order, its ``num`` rows in blocks of
    :data:`NOISE_BLOCK`, drawn on the CPU."""
    for i in range(points):
        gen = torch.Generator(device="cpu").manual_seed(point_seed(seed, phase, i))
        for start in range(0, num, NOISE_BLOCK):
            yield i, torch.randn((min(NOISE_BLOCK, num - start), *shape), generator=gen, dtype=dtype)


@torch.no_grad()
def class_counts(
    model: nn.Module,
    x: torch.Tensor,
    sigmas: Sequence[float],
    num: int,
    batch: int,
    seed: int,
    phase: int,
    classes: int,
) -> torch.Tensor:
    """How often f(x + σ·z) is each class over ``num`` draws z ~ N(0, I) per test point, for every σ (the same
    draws z scaled): Cohen et al.'s SampleUnderNoise, (len(σ), N, classes) int64 on the CPU. The draws go through
    the model ``batch`` rows at a time."""
    counts = torch.zeros(len(sigmas), len(x), classes, dtype=torch.int64)
    noise: list[torch.Tensor] = []  # drawn, not yet through the model; owners: the test point of each row
    owners: list[torch.Tensor] = []

    def run(z: torch.Tensor, owner: torch.Tensor) -> None:
        first, last = int(owner[0]), int(owner[-1])
        # one point: x broadcasts over its draws, no gathered copy
        base = x[first : first + 1] if first == last else x[owner.to(x.device)]
        z = z.to(x.device)
        noisy = torch.empty_like(z)
        local = (owner - first) * classes
        for s, sigma in enumerate(sigmas):
            predicted = model(torch.add(base, z, alpha=sigma, out=noisy)).argmax(1).cpu()
            hits = torch.bincount(local + predicted, minlength=(last - first + 1) * classes).view(-1, classes)
            counts[s, first : last + 1] += hits

    def drain(final: bool) -> int:
        """Run every full batch of the pending draws (and the rest when ``final``); returns how many are left."""
        z = noise[0] if len(noise) == 1 else torch.cat(noise)
        owner = owners[0] if len(owners) == 1 else torch.cat(owners)
        start = 0
        while len(z) - start >= batch or (final and start < len(z)):
            run(z[start : start + batch], owner[start : start + batch])
            start += batch
        left = len(z) - start
        noise[:], owners[:] = ([z[start:]], [owner[start:]]) if left else ([], [])
        return left

    pending = 0
    for point, block in _noise_blocks(len(x), num, tuple(x.shape[1:]), seed, phase, x.dtype):
        noise.append(block)
        owners.append(torch.full((len(block),), point, dtype=torch.int64))
        pending += len(block)
        if pending >= batch:
            pending = drain(final=False)
    if pending:
        drain(final=True)
    return counts


@torch.no_grad()
def certify(
    model: nn.Module,
    x: torch.Tensor,
    sigmas: Sequence[float],
    n0: int,
    n: int,
    alpha: float,
    batch: int,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Cohen et al.'s CERTIFY for every test point and σ: ĉ_A = the top class of ``n0`` selection draws, p_A =
    :func:`clopper_pearson_lower` of its count among ``n`` estimation draws, radius σ·Φ⁻¹(p_A), ABSTAIN (−1) when
    p_A ≤ ½. Returns (classes (S, N), radii (S, N) in float64, 0 where abstained, the estimation counts
    (S, N, K) for :func:`predict`)."""
    classes = int(model(x[:1]).shape[1])
    selection = class_counts(model, x, sigmas, n0, batch, seed, SELECTION, classes)
    estimation = class_counts(model, x, sigmas, n, batch, seed, ESTIMATION, classes)
    c_hat = selection.argmax(2)  # the first of tied classes, deterministically
    n_a = estimation.gather(2, c_hat.unsqueeze(2)).squeeze(2).numpy()
    p_lower = clopper_pearson_lower(n_a, n, alpha)
    sigma = np.asarray(sigmas, dtype=np.float64)[:, None]
    certified = p_lower > 0.5
    radius = np.where(certified, smoothed_radius(np.where(certified, p_lower, 0.75), sigma), 0.0)
    return np.where(certified, c_hat.numpy(), ABSTAIN), radius, estimation


def predict(counts: torch.Tensor, alpha: float) -> np.ndarray:
    """Cohen et al.'s PREDICT from the class counts of ``n`` draws (…, K): the top class when the two-sided
    binomial test of its count against the runner-up's rejects p = ½ at level α, else ABSTAIN (−1)."""
    top = counts.topk(min(2, counts.shape[-1]), dim=-1)
    n_a = top.values[..., 0].numpy()
    n_b = top.values[..., 1].numpy() if counts.shape[-1] > 1 else np.zeros_like(n_a)
    return np.where(binomial_p_value(n_a, n_b) <= alpha, top.indices[..., 0].numpy(), ABSTAIN)


@torch.no_grad()
def smoothed_predict(
    model: nn.Module, x: torch.Tensor, sigma: float, n: int, alpha: float, batch: int, seed: int = 0
) -> np.ndarray:
    """PREDICT of the smoothed classifier at ``x`` with ``n`` fresh draws per point (the class, or −1)."""
    classes = int(model(x[:1]).shape[1])
    return predict(class_counts(model, x, [sigma], n, batch, seed, ESTIMATION, classes)[0], alpha)


def smoothing_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    sigmas: Sequence[float],
    eps: Sequence[float],
    n0: int,
    n: int,
    alpha: float,
    batch: int,
    seed: int = 0,
    per_sample: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, float], dict]:
    """Per σ: ``smoothed_certified_l2_acc_sigma<σ>@ε`` (CERTIFY returned the true class with a radius > ε),
    ``smoothed_clean_acc@σ`` (PREDICT returned the true class), ``smoothed_abstain_rate@σ`` (CERTIFY abstained)
    and ``smoothed_radius_q_sigma<σ>@q`` (quantiles of the radii, 0 where abstained or wrong). Returns the metrics
    and the info (settings, the largest certifiable radius, 21 radius quantiles, PREDICT's abstentions per σ).
    ``per_sample`` receives each accuracy's and the abstain rate's per-sample outcomes."""
    from evaluation.plots import radius_quantiles

    c_hat, radius, counts = certify(model, x, sigmas, n0, n, alpha, batch, seed)
    predicted = predict(counts, alpha)
    labels = y.cpu().numpy()
    metrics: dict[str, float] = {}
    info: dict = {"n0": n0, "n": n, "alpha": alpha, "batch": batch, "seed": seed, "scipy": scipy.__version__,
                  "sigmas": {}}  # fmt: skip
    for s, sigma in enumerate(sigmas):
        correct = c_hat[s] == labels
        r = np.where(correct, radius[s], 0.0)
        outcomes = {metric_key("smoothed_certified_l2_acc", e, param=sigma): correct & (r > e) for e in eps}
        outcomes[metric_key("smoothed_clean_acc", sigma)] = predicted[s] == labels
        outcomes[metric_key("smoothed_abstain_rate", sigma)] = c_hat[s] == ABSTAIN
        for name, mask in outcomes.items():
            # float32 means, as every accuracy is taken: equal counts give equal numbers for the sanity check
            metrics[name] = float(mask.mean(dtype=np.float32))
            if per_sample is not None:
                per_sample[name] = torch.from_numpy(mask)
        for level, value in zip(QUANTILES, linear_quantiles(torch.from_numpy(r), QUANTILES), strict=True):
            metrics[metric_key("smoothed_radius_q", level, param=sigma)] = value
        info["sigmas"][f"{sigma:g}"] = {
            "max_radius": max_radius(sigma, n, alpha),
            "radius_quantiles": radius_quantiles(r.tolist()),
            "predict_abstain_rate": float((predicted[s] == ABSTAIN).mean()),
        }
    return metrics, info


def uncertifiable(sigmas: Sequence[float], eps: Sequence[float], n: int, alpha: float) -> list[str]:
    """A warning for each (σ, ε) that no sample can be certified at: ε ≥ σ·Φ⁻¹(α^{1/n})."""
    found = []
    for sigma in sigmas:
        top = max_radius(sigma, n, alpha)
        too_far = [f"{e:g}" for e in eps if e >= top]
        if too_far:
            found.append(
                f"smoothing σ={sigma:g}: ε = {', '.join(too_far)} cannot be certified with n={n}, α={alpha:g}: the "
                f"largest certifiable radius is σ·Φ⁻¹(α^(1/n)) = {top:.4g} (raise n or σ)"
            )
    return found


#: the kinds of accuracy the smoothing evaluation reports, each a fraction
FRACTIONS = ("smoothed_certified_l2_acc", "smoothed_clean_acc", "smoothed_abstain_rate")


def smoothing_relations(metrics: dict[str, float]) -> dict[str, bool]:
    """``smoothed_certified_l2_acc_sigma<σ>@ε`` ≤ ``smoothed_clean_acc@σ`` (PREDICT counts CERTIFY's estimation
    draws, so a point certified at any but the smallest ε, where the one-sided bound and the two-sided test part,
    is also predicted correctly), every accuracy and abstain rate a fraction, every radius quantile ≥ 0."""
    flags = within(metrics, {**dict.fromkeys(FRACTIONS, (0.0, 1.0)), "smoothed_radius_q": (0.0, math.inf)})
    for name, value in metrics.items():
        parsed = parse(name)
        if parsed.base == "smoothed_certified_l2_acc" and parsed.param:
            clean = metric_key("smoothed_clean_acc", float(parsed.param))
            if clean in metrics:
                flags[f"{name}<={clean}"] = at_most(value, metrics[clean])
    return flags


SMOKE = {"smoothing": {"sigmas": [0.25], "eps": [0.05, 0.1], "n0": 10, "n": 100}}


@register_evaluation("smoothing", CLASSIFICATION, position=40, sanity=smoothing_relations, smoke=SMOKE)
def run_smoothing(ctx: Context) -> None:
    """A job's ``evaluate.smoothing``: CERTIFY and PREDICT for every σ on the test set, with per-sample outcomes
    and a warning for each ε that ``n`` draws cannot certify."""
    ctx.step("smoothing")
    sm = ctx.spec.evaluate.smoothing
    for message in uncertifiable(sm.sigmas, sm.eps, sm.n, sm.alpha):
        ctx.warn(message)
    batch = sm.batch or ctx.spec.evaluate.batch_size
    found, info = smoothing_accuracy(
        ctx.model, ctx.x, ctx.y, sm.sigmas, sm.eps, sm.n0, sm.n, sm.alpha, batch, sm.seed, ctx.per_sample
    )
    ctx.metrics.update(found)
    ctx.info["smoothing"] = info


__all__ = [
    "ABSTAIN",
    "NOISE_BLOCK",
    "binomial_p_value",
    "certify",
    "class_counts",
    "clopper_pearson_lower",
    "max_radius",
    "point_seed",
    "predict",
    "smoothed_predict",
    "smoothed_radius",
    "smoothing_accuracy",
    "smoothing_relations",
    "uncertifiable",
]
