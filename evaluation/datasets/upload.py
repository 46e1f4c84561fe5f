"""A user's uploaded ``.npz`` (classification), read without pickle."""

from __future__ import annotations

import math

import torch

from evaluation.datasets.base import Dataset, register_dataset

NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
NPZ_OPTIONAL = ("valid_range",)
IMAGE_NDIM = 4  # (N, C, H, W)


def read_npz(path, max_bytes: int | None = None) -> tuple[dict, dict]:
    """Read and validate a user's ``.npz``: ``x_train`` (N, …) and ``x_test`` (M, …) numeric and finite with the
    same per-sample shape, ``y_train`` (N,) / ``y_test`` (M,) integer labels in 0..K−1 (K ≥ 2 classes), and
    optionally ``valid_range`` [lo, hi] that every input lies in. Images (N, C, H, W) keep their shape (the models
    see images; attacks and noise act on the pixels); any other shape (N, …) is flattened to (N, D) features as
    before. Never unpickles (``allow_pickle=False``); the archive's uncompressed size is checked against
    ``max_bytes`` before any array is read.

    Returns:
        ``(arrays, meta)``: float32 inputs, (N, C, H, W) or (N, D), int64 labels (and ``valid_range`` if given);
        meta = ``{"n_train", "n_test", "input_dim", "input_shape", "num_classes", "valid_range"}`` (``input_dim``
        = C·H·W for images; ``input_shape`` one sample's shape).

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
            raise ValueError(
                f"x_{split} must be a numeric array of shape (n, features…) or images (n, channels, height, width), "
                f"got {x.dtype} {x.shape}"
            )
        if not lo <= len(x) <= MAX_SAMPLES:
            raise ValueError(f"x_{split} has {len(x)} rows; between {lo} and {MAX_SAMPLES} are allowed")
        x = (x if x.ndim == IMAGE_NDIM else x.reshape(len(x), -1)).astype(np.float32)
        features = math.prod(x.shape[1:])
        if not 1 <= features <= MAX_FEATURES:
            raise ValueError(f"x_{split} has {features} features; between 1 and {MAX_FEATURES} are allowed")
        if not np.isfinite(x).all():
            raise ValueError(f"x_{split} has non-finite values (NaN or inf)")
        if y.dtype.kind not in "iu" or y.ndim != 1:
            raise ValueError(f"y_{split} must be a 1-D integer array of class labels, got {y.dtype} {y.shape}")
        if len(y) != len(x):
            raise ValueError(f"y_{split} has {len(y)} labels for {len(x)} rows of x_{split}")
        if len(y) and y.min() < 0:
            raise ValueError(f"y_{split} has a negative label ({int(y.min())}); labels are 0..K-1")
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y.astype(np.int64)
    train_shape, test_shape = arrays["x_train"].shape[1:], arrays["x_test"].shape[1:]
    if train_shape != test_shape:
        if len(train_shape) == len(test_shape) == 1:
            raise ValueError(f"x_train has {train_shape[0]} features but x_test has {test_shape[0]}")
        raise ValueError(
            f"x_train's samples have shape {tuple(train_shape)} but x_test's {tuple(test_shape)}: both splits must be "
            "images (n, channels, height, width) of one size, or both flat (n, features)"
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
        "input_dim": math.prod(train_shape),
        "input_shape": list(train_shape),
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


@register_dataset("upload", task="classification")
def load_upload(spec) -> Dataset:
    return uploaded(spec.artifact, n_train=spec.n_train, n_test=spec.n_test, seed=spec.seed, noise=spec.noise)
