"""The dataset registry: each dataset's module registers a loader with its task, input shape and valid range.

::

    @register_dataset("digits", task="classification", input_shape=(64,), valid_range=(0.0, 1.0))
    def load_digits(spec) -> Dataset: ...

    DATASETS["cifar10"].mean, DATASETS["cifar10"].std   # per-channel statistics, for a normalising first layer

    data = load_dataset(spec.dataset)      # the one public verb: dispatch on ``spec.name``

A loader takes a ``core.spec.DatasetSpec`` (read by attribute) and returns a :class:`Dataset`. The registered task
must be the spec's (``core.spec.DATASET_TASKS``): a test walks the registry and loads every dataset.
"""

from __future__ import annotations

from collections.abc import Callable
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


@dataclass(frozen=True)
class DatasetLoader:
    """A registered dataset: ``load(spec) -> Dataset``; ``input_shape`` (one sample's shape: (C, H, W) for images)
    and ``valid_range`` (the box every input lies in) as declared, ``None`` where the data decide (an upload).
    ``mean`` / ``std``: an image dataset's per-channel statistics of its training pixels in [0, 1]
    (``core.datasets``). The data are never standardised: a model that wants it puts ``(x − mean) / std`` inside
    itself, so that every threat model stays in [0, 1] pixel space."""

    name: str
    task: str
    load: Callable[..., Dataset]
    input_shape: tuple[int, ...] | None = None
    valid_range: tuple[float, float] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


DATASETS: dict[str, DatasetLoader] = {}


def register_dataset(
    name: str,
    task: str,
    input_shape: tuple[int, ...] | None = None,
    valid_range: tuple[float, float] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    """Register ``load(spec) -> Dataset`` as dataset ``name`` (once)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r} of dataset {name!r} ({', '.join(TASKS)})")
    if (mean is None) != (std is None) or (mean is not None and len(mean) != len(std)):
        raise ValueError(f"dataset {name!r}: give mean and std together, one value per channel")

    def register(load: Callable[..., Dataset]) -> Callable[..., Dataset]:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is registered twice")
        DATASETS[name] = DatasetLoader(name, task, load, input_shape, valid_range, mean, std)
        return load

    return register


def load_dataset(spec) -> Dataset:
    """The dataset a ``DatasetSpec`` names."""
    loader = DATASETS.get(spec.name)
    if loader is None:
        raise ValueError(f"unknown dataset {spec.name!r}; registered: {sorted(DATASETS)}")
    return loader.load(spec)
