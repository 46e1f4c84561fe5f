"""A sweep beside Reshniak & Webster's poster "Robust learning with implicit residual networks": its table of
classification accuracy (%) under Gaussian noise for θ = 0 … 1 (:data:`POSTER_GAUSSIAN`), the data's own noise
ceiling on the spirals, and whether accuracy rises with θ (:func:`trend_check`)::

    from evaluation.poster import poster_reference, trend_check
    poster_reference(theta_of(point))          # {σ: accuracy} of the poster's column for the point's θ
    trend_check(outcomes, sigma=0.3)           # TrendCheck(sigma, by_theta): .rises, .monotone
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from core.families import FAMILIES
from core.metrics import kind_of, level_of
from core.spec import JobSpec
from evaluation.sweep import PointOutcome, SweepPoint

# Reshniak & Webster, poster "Robust learning with implicit residual networks", "Classification accuracy for data
# corrupted with Gaussian noise": noise σ → {θ: accuracy %}.
POSTER_THETAS = (0.0, 0.25, 0.5, 0.75, 1.0)
POSTER_GAUSSIAN: dict[float, dict[float, float]] = {
    0.0: dict(zip(POSTER_THETAS, (100.0, 100.0, 100.0, 100.0, 100.0), strict=True)),
    0.1: dict(zip(POSTER_THETAS, (98.1, 100.0, 99.9, 99.9, 100.0), strict=True)),
    0.2: dict(zip(POSTER_THETAS, (90.9, 96.7, 97.1, 97.9, 98.1), strict=True)),
    0.3: dict(zip(POSTER_THETAS, (78.5, 87.3, 90.3, 91.9, 94.2), strict=True)),
    0.4: dict(zip(POSTER_THETAS, (63.1, 75.1, 77.0, 78.9, 85.1), strict=True)),
    0.5: dict(zip(POSTER_THETAS, (50.3, 63.2, 63.6, 65.4, 73.4), strict=True)),
}


def gaussian_curve(metrics: Mapping[str, float], kind: str = "gaussian_acc") -> dict[float, float]:
    """{σ: value} of one run (``kind``: ``gaussian_acc``, or ``gaussian_psnr`` / ``gaussian_mse`` for regression;
    see :func:`core.metrics.gaussian_kind`)."""
    return {level_of(n): v for n, v in metrics.items() if kind_of(n) == kind}


def theta_of(point: SweepPoint) -> float | None:
    """The θ of the point's integrator (explicit Euler: 0; ``None`` for a family that is no θ-method)."""
    model = point.spec.model
    return FAMILIES[model.family].theta(model.model_dump())


def poster_reference(theta: float | None) -> dict[float, float] | None:
    """The poster's accuracy (as a fraction) at each noise level for this θ, or ``None`` if the table has no column
    for it."""
    if theta is None:
        return None
    for t in POSTER_THETAS:
        if math.isclose(t, theta, abs_tol=1e-9):
            return {sigma: row[t] / 100 for sigma, row in POSTER_GAUSSIAN.items()}
    return None


def spirals_noise_ceiling(spec: JobSpec) -> dict[float, float] | None:
    """σ → accuracy of the nearest-arm rule (:func:`evaluation.datasets.nearest_arm_labels`, which knows the
    spirals' generating curves) on exactly the noisy test copies the job's Gaussian evaluation draws: the ceiling
    of the Gaussian-noise accuracy any network can reach on that data. ``None`` unless the job is on ``spirals``
    with a Gaussian evaluation."""
    from evaluation.datasets import load_dataset, nearest_arm_labels
    from evaluation.gaussian import noisy_copies

    gaussian = spec.evaluate.gaussian
    if spec.dataset.name != "spirals" or gaussian is None:
        return None
    data = load_dataset(spec.dataset)
    noisy = noisy_copies(data.x_test, gaussian.sigmas, gaussian.repeats, gaussian.seed, data.valid_range)
    k = len(gaussian.sigmas) * gaussian.repeats
    correct = nearest_arm_labels(noisy, spec.dataset.scale) == data.y_test.repeat(k)
    per_sigma = correct.double().view(len(gaussian.sigmas), -1).mean(dim=1)
    return dict(zip(gaussian.sigmas, per_sigma.tolist(), strict=True))


@dataclass
class TrendCheck:
    """Does accuracy at noise σ rise with θ? ``by_theta``: θ → accuracy (mean over points with that θ)."""

    sigma: float
    by_theta: dict[float, float]

    @property
    def rises(self) -> bool | None:
        """θ_max above θ_min (``None`` when fewer than two θ were measured at σ)."""
        if len(self.by_theta) < 2:
            return None
        thetas = sorted(self.by_theta)
        return self.by_theta[thetas[-1]] > self.by_theta[thetas[0]]

    @property
    def monotone(self) -> bool | None:
        if len(self.by_theta) < 2:
            return None
        values = [self.by_theta[t] for t in sorted(self.by_theta)]
        return all(b >= a for a, b in zip(values, values[1:], strict=False))


def trend_check(outcomes: Sequence[PointOutcome], sigma: float | None = None) -> TrendCheck | None:
    """The θ trend of Gaussian accuracy at ``sigma`` (default: the largest σ every θ was measured at)."""
    per_theta: dict[float, list[dict[float, float]]] = {}
    for o in outcomes:
        theta = theta_of(o.point)
        if o.ok and theta is not None:
            per_theta.setdefault(theta, []).append(gaussian_curve(o.metrics))
    if len(per_theta) < 2:
        return None
    common = set.intersection(*[set(c) for curves in per_theta.values() for c in curves])
    if sigma is None:
        if not common:
            return None
        sigma = max(common)
    by_theta = {}
    for theta, curves in per_theta.items():
        values = [c[sigma] for c in curves if sigma in c]
        if values:
            by_theta[theta] = sum(values) / len(values)
    return TrendCheck(sigma, dict(sorted(by_theta.items())))


__all__ = [
    "POSTER_GAUSSIAN",
    "POSTER_THETAS",
    "TrendCheck",
    "gaussian_curve",
    "poster_reference",
    "spirals_noise_ceiling",
    "theta_of",
    "trend_check",
]
