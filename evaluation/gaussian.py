"""Accuracy under additive Gaussian noise (Reshniak & Webster's poster, table "Classification accuracy for data
corrupted with Gaussian noise")."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from core.metrics import metric_key
from evaluation.registry import CLASSIFICATION, Context, register_evaluation, within

#: this evaluation's protocol revision: bump it when a change alters its numbers on purpose (core/protocol.py)
# revision 2: the noise is drawn one (σ, repeat) at a time (mini-batch evaluation)
PROTOCOL_REVISION = 2

# Rows per forward: bounded memory for large noise batches. On a CPU, activations of a few thousand rows stay in
# cache (a 47 820-row digits batch runs ~1.7× faster in 4096-row chunks than in one); a GPU wants large batches.
CHUNK_ROWS = 65_536
CPU_CHUNK_ROWS = 4_096


@torch.no_grad()
def outputs(model: nn.Module, x: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """``model(x)`` in chunks of ``chunk`` rows (default: 4096 on CPU, 65 536 on a GPU)."""
    if chunk is None:
        chunk = CPU_CHUNK_ROWS if x.device.type == "cpu" else CHUNK_ROWS
    return torch.cat([model(x[i : i + chunk]) for i in range(0, len(x), chunk)])


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """Class predictions, from :func:`outputs` in chunks."""
    return outputs(model, x, chunk).argmax(1)


def noisy_draws(
    x: torch.Tensor, sigmas: list[float], repeats: int, seed: int, valid_range: tuple[float, float] | None
) -> Iterator[torch.Tensor]:
    """x + σ·N(0, I) for every (σ, repeat), σ-major, one (N, …) tensor at a time (memory: one copy of the test
    data, whatever the number of draws), clipped only to a declared ``valid_range``. The noise is in the data's
    own units and drawn, one draw after the other, from one stream seeded with ``seed`` on the CPU, so every
    evaluation with the same seed sees the same numbers on any device and at any batch size."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for sigma in sigmas:
        for _ in range(repeats):
            noisy = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device).mul_(sigma).add_(x)
            yield noisy.clamp_(*valid_range) if valid_range is not None else noisy


def noisy_copies(
    x: torch.Tensor, sigmas: list[float], repeats: int, seed: int, valid_range: tuple[float, float] | None
) -> torch.Tensor:
    """Every draw of :func:`noisy_draws` as one (len(σ)·repeats·N, …) tensor (small data only: the sweeps)."""
    return torch.cat(list(noisy_draws(x, sigmas, repeats, seed, valid_range)))


@torch.no_grad()
def gaussian_noise_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    sigmas: list[float],
    repeats: int,
    seed: int = 0,
    valid_range: tuple[float, float] | None = None,
    per_sample: dict[str, torch.Tensor] | None = None,
    batch_size: int | None = None,
) -> dict[str, float]:
    """Mean and std (over ``repeats`` draws) of accuracy on x + σ·N(0, I), for every σ (:func:`noisy_draws`, each
    draw predicted ``batch_size`` rows at a time).

    Noise is in the data's own units and clipped only to a declared ``valid_range`` (e.g. images in [0, 1]).
    Returns ``gaussian_acc@σ`` and ``gaussian_acc_std@σ`` metrics. ``per_sample``, when given, receives each σ's
    (repeats, N) mask of correct draws (for :mod:`evaluation.outcomes`).
    """
    n, k = len(x), len(sigmas) * repeats
    correct = torch.empty(k, n, dtype=torch.float32, device=x.device)
    for draw, noisy in enumerate(noisy_draws(x, sigmas, repeats, seed, valid_range)):
        correct[draw] = (predict(model, noisy, batch_size) == y).float()
    per_draw = correct.view(len(sigmas), repeats, n).mean(dim=2)  # accuracy of each draw
    metrics: dict[str, float] = {}
    for i, sigma in enumerate(sigmas):
        metrics[metric_key("gaussian_acc", sigma)] = float(per_draw[i].mean())
        metrics[metric_key("gaussian_acc_std", sigma)] = float(per_draw[i].std(unbiased=False))
        if per_sample is not None:
            per_sample[metric_key("gaussian_acc", sigma)] = correct.view(len(sigmas), repeats, n)[i].bool()
    return metrics


def gaussian_relations(metrics: dict[str, float]) -> dict[str, bool]:
    """An accuracy under noise is a fraction, and the spread of a fraction over draws is at most ½."""
    return within(metrics, {"gaussian_acc": (0.0, 1.0), "gaussian_acc_std": (0.0, 0.5)})


SMOKE = {"gaussian": {"sigmas": [0.0, 0.1], "repeats": 2}}


@register_evaluation("gaussian", CLASSIFICATION, position=10, sanity=gaussian_relations, smoke=SMOKE)
def run_gaussian(ctx: Context) -> None:
    """A job's ``evaluate.gaussian``: accuracy under Gaussian noise per σ, with its per-sample outcomes."""
    ctx.step("gaussian")
    g = ctx.spec.evaluate.gaussian
    ctx.metrics.update(
        gaussian_noise_accuracy(
            ctx.model, ctx.x, ctx.y, g.sigmas, g.repeats, g.seed, ctx.data.valid_range, ctx.per_sample,
            ctx.spec.evaluate.batch_size,
        )  # fmt: skip
    )
