"""Datasets generated from a formula, no files: the two spirals (classification), the sine of Reshniak & Webster
and the Lotka–Volterra flow map (regression)."""

from __future__ import annotations

import math

import torch

from evaluation.datasets.base import Dataset, register_dataset


def two_spirals(
    n_train: int = 100, n_test: int = 100, seed: int = 0, noise: float = 0.0, scale: float = 1.0
) -> Dataset:
    """Two interleaved spirals (Haber & Ruthotto, "Stable architectures for deep neural networks", 2017), as used
    in Reshniak & Webster, "Robust learning with implicit residual networks", Example 2: 200 points on
    two differently labelled spirals; every other point is held out for validation.

    Points lie in [-scale, scale]² (the arms of opposite classes are 0.28·scale apart). ``noise`` adds seeded
    Gaussian jitter of that standard deviation (in the scaled units).
    """
    total = n_train + n_test
    per_class = math.ceil(total / 2)
    arm = spiral_arm(torch.linspace(0.0, 1.0, per_class, dtype=torch.float64), scale)
    points = torch.stack([arm, -arm], dim=1).reshape(-1, 2)[:total]  # alternate the classes along the arms
    labels = torch.tensor([0, 1], dtype=torch.long).repeat(per_class)[:total]
    if noise > 0:
        gen = torch.Generator().manual_seed(seed)
        points = points + noise * torch.randn(points.shape, generator=gen, dtype=torch.float64)
    if n_train == n_test:  # the seed's split: every other point (of each class) is held out
        pair = torch.arange(total) // 2
        test_mask = pair % 2 == 1
    else:
        gen = torch.Generator().manual_seed(seed + 1)
        test_mask = torch.zeros(total, dtype=torch.bool)
        test_mask[torch.randperm(total, generator=gen)[:n_test]] = True
    points = points.float()
    return Dataset(points[~test_mask], labels[~test_mask], points[test_mask], labels[test_mask], num_classes=2)


def spiral_arm(t: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Class 0's arm of :func:`two_spirals` at curve parameters t ∈ [0, 1] (1.5 turns, radius 0.15 → 1, times
    ``scale``); class 1's arm is its point reflection −arm."""
    angle = 3 * math.pi * t + math.pi / 2
    radius = 0.15 + 0.85 * t
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1) * scale


NEAREST_ARM_CHUNK = 1024  # rows of x per distance table in nearest_arm_labels (1024 × 4096 doubles: 32 MiB)


def nearest_arm_labels(x: torch.Tensor, scale: float = 1.0, resolution: int = 4096) -> torch.Tensor:
    """The class of the spiral arm nearest to each point of ``x`` (N, 2): the classifier that knows the data's
    generating curves. Under isotropic Gaussian noise it is (up to the arms' curvature) the Bayes rule, so its
    accuracy on noisy copies is the ceiling no network can beat by more than chance on that data."""
    arm = spiral_arm(torch.linspace(0.0, 1.0, resolution, dtype=torch.float64), scale)
    points = x.detach().double().cpu()
    labels = []
    for chunk in points.split(NEAREST_ARM_CHUNK):  # a (chunk × resolution) distance table at a time
        to_arm = torch.cdist(chunk, arm).min(dim=1).values
        to_other = torch.cdist(chunk, -arm).min(dim=1).values
        labels.append((to_other < to_arm).long())
    return torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)


@register_dataset("spirals", task="classification", input_shape=(2,))
def load_spirals(spec) -> Dataset:
    return two_spirals(n_train=spec.n_train, n_test=spec.n_test, seed=spec.seed, noise=spec.noise, scale=spec.scale)


# ---------------------------------------------------------------------------------------------------- regression
SINE_INTERVAL = (-5.0, 5.0)


def sine_target(x: torch.Tensor) -> torch.Tensor:
    """f(x) = sin x + 0.1·cos 19x (Reshniak & Webster, "Robust learning with implicit residual networks",
    Example 1)."""
    return torch.sin(x) + 0.1 * torch.cos(19 * x)


def sine(n_train: int = 51, n_test: int = 50, seed: int = 0, noise: float = 0.0) -> Dataset:
    """Regression of f(x) = sin x + 0.1·cos 19x on [−5, 5] (Reshniak & Webster, Example 1): ``n_train`` equally spaced
    training points including the ends (the seed uses N = 51) and ``n_test`` validation points at the centres of
    ``n_test`` equal cells of the interval (n_test = 50 with n_train = 51: the midpoints between training points, where
    the 0.1·cos 19x term, under-sampled by the training grid, shows). ``noise`` adds seeded Gaussian noise of that
    standard deviation to the training targets. Inputs and targets have shape (n, 1); no valid range is declared."""
    lo, hi = SINE_INTERVAL
    x_train = torch.linspace(lo, hi, n_train, dtype=torch.float64)[:, None]
    x_test = (lo + (torch.arange(n_test, dtype=torch.float64) + 0.5) * (hi - lo) / n_test)[:, None]
    y_train, y_test = sine_target(x_train), sine_target(x_test)
    if noise > 0:
        gen = torch.Generator().manual_seed(seed)
        y_train = y_train + noise * torch.randn(y_train.shape, generator=gen, dtype=torch.float64)
    return Dataset(x_train.float(), y_train.float(), x_test.float(), y_test.float(), num_classes=0, task="regression")


LV_STEPS = 50  # transitions per trajectory (the poster: j = 1 … 50)
LV_DT = 0.2  # z^i(0.2·j)
LV_BOX = (0.5, 2.0)  # initial conditions z(0) ~ U[0.5, 2]² (orbits around the equilibrium (1, 1/2))


def lotka_volterra_field(_t: float, z):
    """ż₁ = 2/3·z₁ − 4/3·z₁z₂, ż₂ = z₁z₂ − z₂ (Reshniak & Webster, poster)."""
    z1, z2 = z
    return [2.0 / 3.0 * z1 - 4.0 / 3.0 * z1 * z2, z1 * z2 - z2]


def lotka_volterra_trajectories(initial, steps: int = LV_STEPS, dt: float = LV_DT):
    """Ground-truth trajectories (k, steps + 1, 2) in float64 at t = 0, dt, …, steps·dt: one
    ``scipy.integrate.solve_ivp`` (DOP853, rtol 1e-10, atol 1e-12) per initial condition, so a trajectory never
    depends on which others are computed with it."""
    import numpy as np
    from scipy.integrate import solve_ivp

    t_eval = dt * np.arange(steps + 1)
    out = np.empty((len(initial), steps + 1, 2))
    for i, z0 in enumerate(np.asarray(initial, dtype=np.float64)):
        sol = solve_ivp(
            lotka_volterra_field, (0.0, t_eval[-1]), z0, method="DOP853", t_eval=t_eval, rtol=1e-10, atol=1e-12
        )
        if not sol.success:  # pragma: no cover - the orbits are bounded and smooth
            raise RuntimeError(f"Lotka–Volterra integration failed from {z0.tolist()}: {sol.message}")
        out[i] = sol.y.T
    return out


def lotka_volterra(n_train: int = 500, n_test: int = 500, seed: int = 0, noise: float = 0.0) -> Dataset:
    """Learn the time-0.2 flow map z_k ↦ z_{k+1} of the Lotka–Volterra system of Reshniak & Webster's poster
    (trajectories of 50 steps, z(0.2·j), j = 0 … 50). Training pairs come from ⌈n_train/50⌉ trajectories started at
    seeded initial conditions z(0) ~ U[0.5, 2]², test pairs from ⌈n_test/50⌉ others (a separate stream: the test set
    does not depend on n_train); the first n pairs are kept, trajectory after trajectory. ``noise`` adds seeded
    Gaussian noise to the training targets. ``trajectories`` holds the test trajectories for the 50-step rollout error
    (the poster's loss (1/50N)·Σ_i Σ_j ‖y_j^i − z^i(0.2j)‖²)."""
    import numpy as np

    def pairs(n: int, stream: int):
        k = math.ceil(n / LV_STEPS)
        initial = np.random.default_rng([seed, stream]).uniform(*LV_BOX, size=(k, 2))
        traj = torch.from_numpy(lotka_volterra_trajectories(initial))
        x = traj[:, :-1].reshape(-1, 2)[:n]
        y = traj[:, 1:].reshape(-1, 2)[:n]
        return x, y, traj

    x_train, y_train, _ = pairs(n_train, 0)
    x_test, y_test, trajectories = pairs(n_test, 1)
    if noise > 0:
        gen = torch.Generator().manual_seed(seed)
        y_train = y_train + noise * torch.randn(y_train.shape, generator=gen, dtype=torch.float64)
    return Dataset(
        x_train.float(),
        y_train.float(),
        x_test.float(),
        y_test.float(),
        num_classes=0,
        task="regression",
        trajectories=trajectories.float(),
    )


@register_dataset("sine", task="regression", input_shape=(1,))
def load_sine(spec) -> Dataset:
    return sine(n_train=spec.n_train, n_test=spec.n_test, seed=spec.seed, noise=spec.noise)


@register_dataset("lotka_volterra", task="regression", input_shape=(2,))
def load_lotka_volterra(spec) -> Dataset:
    return lotka_volterra(n_train=spec.n_train, n_test=spec.n_test, seed=spec.seed, noise=spec.noise)
