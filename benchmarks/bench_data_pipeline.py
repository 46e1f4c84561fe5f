"""Benchmark: the training data pipeline against the training step (a script, not a test).

    python benchmarks/bench_data_pipeline.py            # CPU, 1 torch thread (as a worker runs a job)
    python benchmarks/bench_data_pipeline.py --quick    # fewer rounds

For MNIST-shaped (1×28×28) and CIFAR-shaped (3×32×32) random images, batch 128, it measures images per second of

* **loader**: one epoch of :func:`evaluation.training.data.training_loader` (the seeded per-epoch permutation, the
  batch gathered from the in-memory tensors) with 0 and 2 worker processes, and the same followed by the
  per-batch augmentation a job with ``train.augment: {"crop_padding": 4, "flip": true}`` runs (crop and flip drawn
  from the training generator in the training process);
* **step**: forward, loss, backward and optimizer step of a model on batches already in memory (no loader), for a
  tiny convolutional network (conv 3×3 × 8 → ReLU → 2×2 max-pool → linear) and the project's dense ``explicit``
  family (width 64, depth 2, on the flattened image);
* **train**: ``train_images_per_second`` of :func:`evaluation.training.train_classifier` over whole epochs
  (loader, augmentation and step together).

and prints loader ÷ step for the default pipeline (``loader_workers`` 0, with and without augmentation): above 1
the loader keeps ahead of the step (it is not the bottleneck). Worker processes are shown for comparison: on
in-memory tensors they only add inter-process copies. Rounds interleave the candidates (a load change on the shared
machine hits all alike); each figure is the median over rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.spec import ModelSpec, TrainSpec  # noqa: E402
from evaluation.datasets import Dataset  # noqa: E402
from evaluation.training import augment_images, train_classifier  # noqa: E402
from evaluation.training.data import training_loader  # noqa: E402
from models import build_model  # noqa: E402

SHAPES = {"mnist-shaped": (1, 28, 28), "cifar-shaped": (3, 32, 32)}
BATCH = 128
CPU = torch.device("cpu")


def tiny_conv(shape: tuple[int, int, int]) -> nn.Module:
    channels, height, width = shape
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(8 * (height // 2) * (width // 2), 10),
    )  # fmt: skip


def dense_explicit(shape: tuple[int, int, int]) -> nn.Module:
    features = shape[0] * shape[1] * shape[2]
    return build_model(ModelSpec(family="explicit", width=64, depth=2, input_dim=features, output_dim=10))


MODELS: dict[str, Callable[[tuple[int, int, int]], nn.Module]] = {
    "tiny-conv": tiny_conv,
    "explicit-dense": dense_explicit,
}


def images_per_second(run: Callable[[], int]) -> float:
    start = time.perf_counter()
    count = run()
    return count / (time.perf_counter() - start)


def loader_epoch(x: torch.Tensor, y: torch.Tensor, workers: int, augment: bool) -> Callable[[], int]:
    gen = torch.Generator().manual_seed(0)
    loader = training_loader(x, y, BATCH, gen, CPU, workers, seed=0)

    def epoch() -> int:
        count = 0
        for xb, _yb in loader:
            if augment:
                xb = augment_images(xb, 4, True, gen)
            count += len(xb)
        return count

    return epoch


def steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], int]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]

    def epoch() -> int:
        for xb, yb in batches:
            loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return len(x)

    return epoch


def whole_training(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> Callable[[], int]:
    data = Dataset(x, y, x[:BATCH], y[:BATCH], num_classes=10, valid_range=(0.0, 1.0))
    spec = TrainSpec(epochs=epochs, lr=0.01, optimizer="sgd", batch_size=BATCH,
                     augment={"crop_padding": 4, "flip": True})  # fmt: skip
    rate: list[float] = []

    def epoch() -> int:
        rate.append(train_classifier(model, data, spec, CPU)["train_images_per_second"])
        return 0

    epoch.rate = rate  # type: ignore[attr-defined]
    return epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 2048 images (default 5 of 8192)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a worker's default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rounds, n = (3, 2048) if args.quick else (5, 8192)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {BATCH}, {n} images, median of {rounds} rounds")
    for shape_name, shape in SHAPES.items():
        gen = torch.Generator().manual_seed(0)
        x, y = torch.rand(n, *shape, generator=gen), torch.randint(0, 10, (n,), generator=gen)
        loaders = {f"loader, {w} workers{', +augment' if a else ''}": loader_epoch(x, y, w, a)
                   for w in (0, 2) for a in (False, True)}  # fmt: skip
        torch.manual_seed(0)
        models = {name: make(shape) for name, make in MODELS.items()}
        stepping = {f"step, {name}": steps(model, x, y) for name, model in models.items()}
        training = {f"train_classifier, {name}": whole_training(model, x, y, 1) for name, model in models.items()}
        times: dict[str, list[float]] = {k: [] for k in (*loaders, *stepping)}
        for _ in range(rounds):
            for name, run in {**loaders, **stepping}.items():
                times[name].append(images_per_second(run))
            for run in training.values():
                run()
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"\n{shape_name} {shape}")
        for name, value in med.items():
            print(f"  {name:<34} {value:>10.0f} images/s")
        for name, run in training.items():
            print(f"  {name:<34} {statistics.median(run.rate):>10.0f} images/s (loader + augment + step)")
        for loader in ("loader, 0 workers", "loader, 0 workers, +augment"):
            for name in stepping:
                ratio = med[loader] / med[name]
                verdict = "loader keeps ahead" if ratio > 1 else "LOADER IS THE BOTTLENECK"
                print(f"  {loader + ' ÷ ' + name:<56} {ratio:>6.1f}×  {verdict}")


if __name__ == "__main__":
    main()
