"""Training batches through ``torch.utils.data``: the in-memory tensors as a dataset, one seeded permutation per
epoch, worker processes and pinned memory on request, and image augmentation drawn per batch.

**The batches are those of the loop before the DataLoader** (a test holds them to a copy of it): each epoch draws
``torch.randperm(n, generator=gen)`` from the training generator (seeded with ``train.seed``, on the CPU) and cuts
it into consecutive batches of ``train.batch_size`` (the last one shorter); a full batch (no ``batch_size``) takes
the samples in order and draws nothing. Augmentation (:func:`augment_images`) draws from the same generator, in the
training process, right after each batch arrives (then ``train.noise_sigma``'s Gaussian noise, also from it), so
every draw comes in the old order whatever the number of workers. The workers only gather ``x[idx]``, ``y[idx]``:
they draw nothing, so their seeds cannot change a batch. The DataLoader's own generator (its workers' base seed,
drawn at every epoch's ``iter``) is a separate one, so neither the training generator nor the global RNG sees that
draw.
"""

from __future__ import annotations

import math
import multiprocessing
import warnings
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset


class LoaderWorkersUnavailable(RuntimeWarning):
    """``train.loader_workers`` > 0 in a daemonic process (a Celery prefork child), which may not start children:
    the batches are gathered in-process (the same batches)."""


class InMemoryPairs(TorchDataset):
    """``(x[i], y[i])`` over two tensors of the same length, like ``TensorDataset``, plus ``__getitems__``: a whole
    batch is gathered by one indexing operation, not sample by sample and then stacked."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if len(x) != len(y):
            raise ValueError(f"inputs and targets differ in length: {len(x)} vs {len(y)}")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]

    def __getitems__(self, indices: torch.Tensor | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.x[idx], self.y[idx]


class EpochBatches(Sampler[torch.Tensor]):
    """The index batches of one epoch per ``iter``: a fresh ``torch.randperm(n, generator=gen)`` cut into
    consecutive batches of ``batch`` (the last one shorter), or, when one batch holds every sample, ``0…n−1`` with
    no draw. The permutation is drawn when the epoch's first batch is asked for."""

    def __init__(self, n: int, batch: int, gen: torch.Generator) -> None:
        self.n, self.batch, self.gen = n, batch, gen

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch)

    def __iter__(self) -> Iterator[torch.Tensor]:
        order = torch.randperm(self.n, generator=self.gen) if self.batch < self.n else torch.arange(self.n)
        for i in range(0, self.n, self.batch):
            yield order[i : i + self.batch]


def _as_gathered(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The collate function: ``InMemoryPairs.__getitems__`` already returns the stacked batch."""
    return batch


def loader_workers(requested: int) -> int:
    """``requested`` worker processes, or 0 (with a :class:`LoaderWorkersUnavailable` warning) in a daemonic
    process, which Python forbids to start children."""
    if requested > 0 and multiprocessing.current_process().daemon:
        warnings.warn(
            f"train.loader_workers = {requested} ignored: this worker process is daemonic (Celery prefork) and "
            "may not start children; batches are gathered in-process (the same batches)",
            LoaderWorkersUnavailable,
            stacklevel=2,
        )
        return 0
    return requested


def training_loader(
    x: torch.Tensor, y: torch.Tensor, batch: int, gen: torch.Generator, device: torch.device, workers: int, seed: int
) -> DataLoader:
    """A DataLoader over the CPU tensors ``x``, ``y`` giving the batches of :class:`EpochBatches` (permutations
    drawn from ``gen``); ``workers`` processes gather them (0: in-process), into pinned memory when ``device`` is
    CUDA (copy them with ``non_blocking=True``). ``seed`` seeds the loader's own generator (its workers' seeds)."""
    workers = loader_workers(workers)
    return DataLoader(
        InMemoryPairs(x, y),
        batch_sampler=EpochBatches(len(x), batch, gen),
        collate_fn=_as_gathered,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )


def augment_images(x: torch.Tensor, crop_padding: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """A batch of images (B, C, H, W), each randomly cropped back to H×W from its zero-padded copy (``crop_padding``
    pixels on every side: a shift of up to ± that much, zeros coming in) and, with ``flip``, mirrored left-right
    with probability ½; the offsets and flips are drawn from ``gen`` (on the CPU: seeded, reproducible on any
    device), the top offsets, the left offsets, then the flips. He, Zhang, Ren & Sun, "Deep Residual Learning for
    Image Recognition" (2016), §4.2.

    One gather from the padded batch makes the whole output: pixel (h, w) of image b is padded pixel
    (top_b + h, left_b + w), or (top_b + h, left_b + W − 1 − w) when b is mirrored."""
    n, channels, height, width = x.shape
    p = crop_padding
    if p == 0 and not flip:
        return x
    rows = torch.arange(height, device=x.device).expand(n, height)
    cols = torch.arange(width, device=x.device).expand(n, width)
    if p > 0:
        rows = rows + torch.randint(0, 2 * p + 1, (n,), generator=gen).to(x.device)[:, None]
        cols = cols + torch.randint(0, 2 * p + 1, (n,), generator=gen).to(x.device)[:, None]
    if flip:
        mirrored = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    padded = nn.functional.pad(x, (p, p, p, p)) if p > 0 else x
    index = (rows[:, :, None] * (width + 2 * p) + cols[:, None, :]).reshape(n, 1, height * width)
    out = padded.reshape(n, channels, -1).gather(2, index.expand(n, channels, height * width))
    return out.reshape(n, channels, height, width)


def gaussian_augmentation(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """x + σ·N(0, I), the noise drawn from ``gen`` on the CPU (the same numbers on any device) and not clipped:
    the inputs randomized smoothing will classify (Cohen, Rosenfeld & Kolter, ICML 2019, section 4: base
    classifiers trained with Gaussian data augmentation at the σ they are smoothed with)."""
    return x + sigma * torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)


__all__ = [
    "EpochBatches",
    "InMemoryPairs",
    "LoaderWorkersUnavailable",
    "augment_images",
    "gaussian_augmentation",
    "training_loader",
]
