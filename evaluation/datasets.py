"""Datasets that need no download."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

TASKS = ("classification", "regression", "denoising")


@dataclass
class Dataset:
    """Inputs and targets of one task. ``classification``: ``y`` holds class labels 0..num_classes−1.
    ``regression`` / ``denoising``: ``y`` holds float targets (N, output_dim…), ``num_classes`` is 0."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    valid_range: tuple[float, float] | None = None  # inputs live in this box (images); None = unbounded
    task: str = "classification"
    # lotka_volterra: the test trajectories (n, steps + 1, 2) at t = 0, Δt, …, for the multi-step rollout error
    trajectories: torch.Tensor | None = None

    @property
    def input_dim(self) -> int:
        return int(self.x_train[0].numel())

    @property
    def output_dim(self) -> int:
        """Width of the model's output: the number of classes, or the size of one target."""
        return self.num_classes if self.task == "classification" else int(self.y_train[0].numel())

    @property
    def peak(self) -> float:
        """Peak value of PSNR = 10·log10(peak²/MSE): the width of the declared valid range (images: 1), otherwise
        the range of the training targets (max − min over all their entries)."""
        if self.valid_range is not None:
            return float(self.valid_range[1] - self.valid_range[0])
        return float(self.y_train.max() - self.y_train.min())


def two_spirals(
    n_train: int = 100, n_test: int = 100, seed: int = 0, noise: float = 0.0, scale: float = 1.0
) -> Dataset:
    """Two interleaved spirals (Haber & Ruthotto, "Stable architectures for deep neural networks", 2017), as used
    in Reshniak & Webster, "Robust learning with implicit residual networks" (seed 002, Example 2): 200 points on
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


def digits(n_train: int = 1000, n_test: int = 797, seed: int = 0, noise: float = 0.0) -> Dataset:
    """UCI 8×8 handwritten digits, scikit-learn's bundled copy (1797 images), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.long)
    if n_train + n_test > len(x):
        raise ValueError(f"digits has {len(x)} images; n_train + n_test = {n_train + n_test}")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=gen)
    train, test = order[:n_train], order[n_train : n_train + n_test]
    x_train = x[train]
    if noise > 0:
        x_train = (x_train + noise * torch.randn(x_train.shape, generator=gen)).clamp(0, 1)
    return Dataset(x_train, y[train], x[test], y[test], num_classes=10, valid_range=(0.0, 1.0))


# ---------------------------------------------------------------------------------------------------- regression
SINE_INTERVAL = (-5.0, 5.0)


def sine_target(x: torch.Tensor) -> torch.Tensor:
    """f(x) = sin x + 0.1·cos 19x (Reshniak & Webster, "Robust learning with implicit residual networks", seed 002,
    Example 1)."""
    return torch.sin(x) + 0.1 * torch.cos(19 * x)


def sine(n_train: int = 51, n_test: int = 50, seed: int = 0, noise: float = 0.0) -> Dataset:
    """Regression of f(x) = sin x + 0.1·cos 19x on [−5, 5] (seed 002, Example 1): ``n_train`` equally spaced training
    points including the ends (the seed uses N = 51) and ``n_test`` validation points at the centres of ``n_test``
    equal cells of the interval (n_test = 50 with n_train = 51: the midpoints between training points, where the
    0.1·cos 19x term, under-sampled by the training grid, shows). ``noise`` adds seeded Gaussian noise of that standard
    deviation to the training targets. Inputs and targets have shape (n, 1); no valid range is declared."""
    lo, hi = SINE_INTERVAL
    x_train = torch.linspace(lo, hi, n_train, dtype=torch.float64)[:, None]
    x_test = (lo + (torch.arange(n_test, dtype=torch.float64) + 0.5) * (hi - lo) / n_test)[:, None]
    y_train, y_test = sine_target(x_train), sine_target(x_test)
    if noise > 0:
        gen = torch.Generator().manual_seed(seed)
        y_train = y_train + noise * torch.randn(y_train.shape, generator=gen, dtype=torch.float64)
    return Dataset(x_train.float(), y_train.float(), x_test.float(), y_test.float(), num_classes=0, task="regression")


LV_STEPS = 50  # transitions per trajectory (seed 001: j = 1 … 50)
LV_DT = 0.2  # z^i(0.2·j)
LV_BOX = (0.5, 2.0)  # initial conditions z(0) ~ U[0.5, 2]² (orbits around the equilibrium (1, 1/2))


def lotka_volterra_field(_t: float, z):
    """ż₁ = 2/3·z₁ − 4/3·z₁z₂, ż₂ = z₁z₂ − z₂ (Reshniak & Webster, poster, seed 001)."""
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
    """Learn the time-0.2 flow map z_k ↦ z_{k+1} of the Lotka–Volterra system of seed 001 (trajectories of 50 steps,
    z(0.2·j), j = 0 … 50). Training pairs come from ⌈n_train/50⌉ trajectories started at seeded initial conditions
    z(0) ~ U[0.5, 2]², test pairs from ⌈n_test/50⌉ others (a separate stream: the test set does not depend on
    n_train); the first n pairs are kept, trajectory after trajectory. ``noise`` adds seeded Gaussian noise to the
    training targets. ``trajectories`` holds the test trajectories for the 50-step rollout error (seed 001's loss
    (1/50N)·Σ_i Σ_j ‖y_j^i − z^i(0.2j)‖²)."""
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


# ---------------------------------------------------------------------------------------------------- denoising
def _digits_images(n_train: int, n_test: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
    """Clean training and test images (n, 64) in [0, 1], split exactly as :func:`digits` splits them, and the
    generator after the split (it goes on to draw the training corruption)."""
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().data / 16.0, dtype=torch.float32)
    if n_train + n_test > len(x):
        raise ValueError(f"digits has {len(x)} images; n_train + n_test = {n_train + n_test}")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=gen)
    return x[order[:n_train]], x[order[n_train : n_train + n_test]], gen


def digits_denoising(n_train: int = 1000, n_test: int = 797, seed: int = 0, noise: float = 0.1) -> Dataset:
    """Denoising of scikit-learn's 8×8 digits (Reshniak, "Dissipative residual layers …", seed 000, §III): input =
    clean + ``noise``·N(0, I) clipped to [0, 1] (a truncated Gaussian corruption), target = the clean image.
    The images are split as :func:`digits` splits them; the training corruption is drawn by the split's generator,
    the test corruption by its own (seed + 1). Valid range [0, 1] for inputs and targets."""
    clean_train, clean_test, gen = _digits_images(n_train, n_test, seed)
    test_gen = torch.Generator().manual_seed(seed + 1)
    x_train = (clean_train + noise * torch.randn(clean_train.shape, generator=gen)).clamp(0, 1)
    x_test = (clean_test + noise * torch.randn(clean_test.shape, generator=test_gen)).clamp(0, 1)
    return Dataset(x_train, clean_train, x_test, clean_test, num_classes=0, valid_range=(0.0, 1.0), task="denoising")


def completion_mask(n: int, side: int, kind: str, fraction: float, gen: torch.Generator) -> torch.Tensor:
    """(n, side²) boolean masks of *missing* pixels. ``block``: one axis-aligned square of round(√fraction·side)
    pixels a side at a uniformly random position per image; ``pixels``: round(fraction·side²) pixels drawn
    uniformly without replacement per image."""
    d = side * side
    if kind == "pixels":
        k = min(d, max(1, round(fraction * d)))
        chosen = torch.rand((n, d), generator=gen).argsort(dim=1)[:, :k]
        return torch.zeros((n, d), dtype=torch.bool).scatter_(1, chosen, True)
    if kind != "block":
        raise ValueError(f"unknown mask kind {kind!r} (block, pixels)")
    b = min(side, max(1, round(math.sqrt(fraction) * side)))
    rows = torch.randint(0, side - b + 1, (n,), generator=gen)
    cols = torch.randint(0, side - b + 1, (n,), generator=gen)
    grid = torch.arange(side)
    in_rows = (grid[None, :] >= rows[:, None]) & (grid[None, :] < rows[:, None] + b)  # (n, side)
    in_cols = (grid[None, :] >= cols[:, None]) & (grid[None, :] < cols[:, None] + b)
    return (in_rows[:, :, None] & in_cols[:, None, :]).reshape(n, d)


def digits_completion(
    n_train: int = 1000,
    n_test: int = 797,
    seed: int = 0,
    noise: float = 0.0,
    mask: str = "block",
    fraction: float = 0.25,
) -> Dataset:
    """Completion of 8×8 digits with missing pixels (seed 000, §III, "Generating digits from missing data"): input =
    the clean image with the pixels of a seeded mask (:func:`completion_mask`) set to 0, target = the clean image.
    ``noise`` > 0 also adds Gaussian noise to the inputs (clipped to [0, 1]). The images are split as :func:`digits`
    splits them; training masks are drawn by the split's generator, test masks by their own (seed + 1). Valid range
    [0, 1]."""
    clean_train, clean_test, gen = _digits_images(n_train, n_test, seed)
    test_gen = torch.Generator().manual_seed(seed + 1)
    inputs = []
    for clean, g in ((clean_train, gen), (clean_test, test_gen)):
        missing = completion_mask(len(clean), 8, mask, fraction, g)
        x = clean.masked_fill(missing, 0.0)
        if noise > 0:
            x = (x + noise * torch.randn(x.shape, generator=g)).clamp(0, 1)
        inputs.append(x)
    return Dataset(
        inputs[0], clean_train, inputs[1], clean_test, num_classes=0, valid_range=(0.0, 1.0), task="denoising"
    )


# ---------------------------------------------------------------------------------------------------- uploads
NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
NPZ_OPTIONAL = ("valid_range",)


def read_npz(path, max_bytes: int | None = None) -> tuple[dict, dict]:
    """Read and validate a user's ``.npz``: ``x_train`` (N, …) and ``x_test`` (M, …) numeric and finite with the
    same features, ``y_train`` (N,) / ``y_test`` (M,) integer labels in 0..K−1 (K ≥ 2 classes), and optionally
    ``valid_range`` [lo, hi] that every input lies in. Never unpickles (``allow_pickle=False``); the archive's
    uncompressed size is checked against ``max_bytes`` before any array is read.

    Returns:
        ``(arrays, meta)``: float32 inputs flattened to (N, D), int64 labels (and ``valid_range`` if given);
        meta = ``{"n_train", "n_test", "input_dim", "num_classes", "valid_range"}``.

    Raises:
        ValueError: naming the first problem found.
    """
    import zipfile

    import numpy as np

    from core.spec import MAX_FEATURES, MAX_SAMPLES

    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"not a .npz archive: {exc}") from None
    names = [m.filename.removesuffix(".npy") for m in members]
    missing = [k for k in NPZ_ARRAYS if k not in names]
    unknown = sorted(set(names) - set(NPZ_ARRAYS) - set(NPZ_OPTIONAL))
    if missing:
        raise ValueError(f"missing array(s) {missing}: a dataset .npz holds {list(NPZ_ARRAYS)}")
    if unknown:
        raise ValueError(f"unknown array(s) {unknown}: a dataset .npz holds {list(NPZ_ARRAYS + NPZ_OPTIONAL)}")
    total = sum(m.file_size for m in members)
    if max_bytes is not None and total > max_bytes:
        raise ValueError(f"the arrays take {total} bytes uncompressed; the limit is {max_bytes}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            raw = {k: npz[k] for k in names}
    except ValueError as exc:  # object arrays need pickle: refused
        raise ValueError(f"cannot read the arrays without pickle: {exc}") from None
    except Exception as exc:
        raise ValueError(f"cannot read the arrays: {type(exc).__name__}: {exc}") from None

    arrays: dict = {}
    for split, lo in (("train", 2), ("test", 1)):
        x, y = raw[f"x_{split}"], raw[f"y_{split}"]
        if x.dtype.kind not in "fiu" or x.ndim < 2:
            raise ValueError(f"x_{split} must be a numeric array of shape (n, features…), got {x.dtype} {x.shape}")
        if not lo <= len(x) <= MAX_SAMPLES:
            raise ValueError(f"x_{split} has {len(x)} rows; between {lo} and {MAX_SAMPLES} are allowed")
        x = x.reshape(len(x), -1).astype(np.float32)
        if not 1 <= x.shape[1] <= MAX_FEATURES:
            raise ValueError(f"x_{split} has {x.shape[1]} features; between 1 and {MAX_FEATURES} are allowed")
        if not np.isfinite(x).all():
            raise ValueError(f"x_{split} has non-finite values (NaN or inf)")
        if y.dtype.kind not in "iu" or y.ndim != 1:
            raise ValueError(f"y_{split} must be a 1-D integer array of class labels, got {y.dtype} {y.shape}")
        if len(y) != len(x):
            raise ValueError(f"y_{split} has {len(y)} labels for {len(x)} rows of x_{split}")
        if len(y) and y.min() < 0:
            raise ValueError(f"y_{split} has a negative label ({int(y.min())}); labels are 0..K-1")
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y.astype(np.int64)
    if arrays["x_train"].shape[1] != arrays["x_test"].shape[1]:
        raise ValueError(
            f"x_train has {arrays['x_train'].shape[1]} features but x_test has {arrays['x_test'].shape[1]}"
        )
    num_classes = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    if num_classes > MAX_FEATURES:
        raise ValueError(f"labels go up to {num_classes - 1}; at most {MAX_FEATURES} classes are allowed")
    if len(np.unique(arrays["y_train"])) < 2:
        raise ValueError("y_train has a single class; a classifier needs at least 2")
    valid_range = None
    if "valid_range" in raw:
        bounds = raw["valid_range"]
        if bounds.dtype.kind not in "fiu" or bounds.shape != (2,) or not np.isfinite(bounds).all():
            raise ValueError(f"valid_range must be two finite numbers [lo, hi], got {bounds.dtype} {bounds.shape}")
        valid_range = (float(bounds[0]), float(bounds[1]))
        if not valid_range[0] < valid_range[1]:
            raise ValueError(f"valid_range must have lo < hi, got {list(valid_range)}")
        for split in ("train", "test"):
            x = arrays[f"x_{split}"]
            if x.min() < valid_range[0] or x.max() > valid_range[1]:
                raise ValueError(f"x_{split} has values outside valid_range {list(valid_range)}")
        arrays["valid_range"] = np.asarray(valid_range, dtype=np.float64)
    meta = {
        "n_train": len(arrays["x_train"]),
        "n_test": len(arrays["x_test"]),
        "input_dim": int(arrays["x_train"].shape[1]),
        "num_classes": num_classes,
        "valid_range": list(valid_range) if valid_range else None,
    }
    return arrays, meta


def uploaded(path, n_train: int, n_test: int, seed: int = 0, noise: float = 0.0) -> Dataset:
    """A user's ``.npz`` (see :func:`read_npz`): the first ``n_train`` rows of its training split and the first
    ``n_test`` of its test split. ``noise`` adds seeded Gaussian jitter to the training inputs."""
    if str(path).startswith("artifact:"):
        raise ValueError(f"{path} is an uploaded artifact: the worker resolves it; locally, give the .npz path")
    arrays, meta = read_npz(path)
    for split, n in (("train", n_train), ("test", n_test)):
        if n > meta[f"n_{split}"]:
            raise ValueError(f"the uploaded dataset has {meta[f'n_{split}']} {split} rows; n_{split} = {n}")
    x_train = torch.from_numpy(arrays["x_train"][:n_train])
    if noise > 0:
        gen = torch.Generator().manual_seed(seed)
        x_train = x_train + noise * torch.randn(x_train.shape, generator=gen)
        if meta["valid_range"]:
            x_train = x_train.clamp(*meta["valid_range"])
    return Dataset(
        x_train,
        torch.from_numpy(arrays["y_train"][:n_train]),
        torch.from_numpy(arrays["x_test"][:n_test]),
        torch.from_numpy(arrays["y_test"][:n_test]),
        num_classes=meta["num_classes"],
        valid_range=tuple(meta["valid_range"]) if meta["valid_range"] else None,
    )


DATASETS = {
    "spirals": two_spirals,
    "digits": digits,
    "sine": sine,
    "lotka_volterra": lotka_volterra,
    "digits_denoising": digits_denoising,
    "digits_completion": digits_completion,
}


def load_dataset(spec) -> Dataset:
    """The dataset a ``DatasetSpec`` names."""
    if spec.name == "upload":
        return uploaded(spec.artifact, n_train=spec.n_train, n_test=spec.n_test, seed=spec.seed, noise=spec.noise)
    extra = {"scale": spec.scale} if spec.name == "spirals" else {}
    if spec.name == "digits_completion":
        extra = {"mask": spec.mask.kind, "fraction": spec.mask.fraction}
    return DATASETS[spec.name](n_train=spec.n_train, n_test=spec.n_test, seed=spec.seed, noise=spec.noise, **extra)
