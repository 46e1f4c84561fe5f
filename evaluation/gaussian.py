"""Accuracy under additive Gaussian noise (Reshniak & Webster's poster, table "Classification accuracy for data
corrupted with Gaussian noise")."""

from __future__ import annotations

import torch
from torch import nn

from core.metrics import metric_key
from evaluation.registry import CLASSIFICATION, Context, register_evaluation, within

#: this evaluation's protocol revision: bump it when a change alters its numbers on purpose (core/protocol.py)
PROTOCOL_REVISION = 1

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


def noisy_copies(
    x: torch.Tensor, sigmas: list[float], repeats: int, seed: int, valid_range: tuple[float, float] | None
) -> torch.Tensor:
    """x + σ·N(0, I) for every (σ, repeat), σ-major, as one (len(σ)·repeats·N, …) tensor, clipped only to a declared
    ``valid_range``. The noise is in the data's own units and drawn from ``seed`` on the CPU, so every evaluation
    with the same seed sees the same numbers on any device.

    One draw for all pairs, turned into x + σ·noise in place: no repeated copy of x, no σ tensor of the batch's
    size (same numbers as x.repeat(k) + σ·noise, which cost three batch-sized tensors).
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    n, shape = len(x), x.shape[1:]
    noisy = torch.randn((len(sigmas) * repeats * n, *shape), generator=gen, dtype=x.dtype).to(x.device)
    sig = torch.tensor(sigmas, dtype=x.dtype, device=x.device).view(-1, *([1] * (x.dim() + 1)))
    noisy.view(len(sigmas), repeats, n, *shape).mul_(sig).add_(x)
    if valid_range is not None:
        noisy.clamp_(*valid_range)
    return noisy


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
) -> dict[str, float]:
    """Mean and std (over ``repeats`` draws) of accuracy on x + σ·N(0, I), for every σ, in one batched pass.

    Noise is in the data's own units and clipped only to a declared ``valid_range`` (e.g. images in [0, 1]).
    Returns ``gaussian_acc@σ`` and ``gaussian_acc_std@σ`` metrics. ``per_sample``, when given, receives each σ's
    (repeats, N) mask of correct draws (for :mod:`evaluation.outcomes`).
    """
    n, k = len(x), len(sigmas) * repeats
    noisy = noisy_copies(x, sigmas, repeats, seed, valid_range)
    correct = (predict(model, noisy).view(k, n) == y).float()
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
            ctx.model, ctx.x, ctx.y, g.sigmas, g.repeats, g.seed, ctx.data.valid_range, ctx.per_sample
        )
    )
