"""scikit-learn's bundled 8×8 UCI digits (no download): classification, and the denoising and completion tasks of
Reshniak, "Dissipative residual layers for unsupervised implicit parameterization of data manifolds"."""

from __future__ import annotations

import math

import torch

from evaluation.datasets.base import Dataset, register_dataset

IMAGE = (64,)
UNIT = (0.0, 1.0)


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


@register_dataset("digits", task="classification", input_shape=IMAGE, valid_range=UNIT)
def load_digits(spec) -> Dataset:
    return digits(n_train=spec.n_train, n_test=spec.n_test, seed=spec.seed, noise=spec.noise)


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
    """Denoising of scikit-learn's 8×8 digits (Reshniak, "Dissipative residual layers …", §III): input =
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
    """Completion of 8×8 digits with missing pixels (Reshniak, "Dissipative residual layers", §III, "Generating digits
    from missing data"): input = the clean image with the pixels of a seeded mask (:func:`completion_mask`) set to 0,
    target = the clean image.
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


@register_dataset("digits_denoising", task="denoising", input_shape=IMAGE, valid_range=UNIT)
def load_digits_denoising(spec) -> Dataset:
    return digits_denoising(n_train=spec.n_train, n_test=spec.n_test, seed=spec.seed, noise=spec.noise)


@register_dataset("digits_completion", task="denoising", input_shape=IMAGE, valid_range=UNIT)
def load_digits_completion(spec) -> Dataset:
    return digits_completion(
        n_train=spec.n_train, n_test=spec.n_test, seed=spec.seed, noise=spec.noise, mask=spec.mask.kind,
        fraction=spec.mask.fraction,
    )  # fmt: skip
