"""What training minimises: the task's loss (cross-entropy, optionally label-smoothed; the multi-margin hinge of
certified training; the mean squared error) plus the spec's regularizers."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from core.spec import TrainSpec
from models.lipschitz import lipschitz_bound
from models.regularizers import regularization_terms


def stochastic_state_penalty(
    states: list[torch.Tensor], perturbed: list[torch.Tensor], power: float = 1.0
) -> torch.Tensor:
    """R_rnd = Σ_{t=1}^T (t/T)^r Σ_p ‖y_t − ỹ_t^(p)‖, averaged over the batch: Reshniak & Webster, "Robust learning
    with implicit residual networks", eq. 10, penalising how perturbations of the input grow along the
    layers. ``perturbed[t]`` holds the P streams' states stacked stream-major, (P·B, …) against ``states[t]`` (B, …).
    """
    T = len(states) - 1
    total = states[0].new_zeros(())
    for t in range(1, T + 1):
        clean = states[t].flatten(1)
        streams = perturbed[t].flatten(1).view(-1, *clean.shape)  # (P, B, D)
        distance = torch.linalg.vector_norm(streams - clean, dim=2)  # (P, B)
        total = total + (t / T) ** power * distance.sum(dim=0).mean()
    return total


def add_regularizers(
    loss: torch.Tensor,
    model: nn.Module,
    states: list[torch.Tensor],
    named: dict,
    gen: torch.Generator,
    sums: dict[str, float],
    count: int,
) -> torch.Tensor:
    """loss + Σ weight × value over the spec's named regularizers (``models.regularizers``); each value, times
    ``count``, is added to ``sums[name]`` for the epoch's log."""
    values = regularization_terms(model, states, {k: r.options() for k, r in named.items()}, gen)
    for name, value in values.items():
        loss = loss + named[name].weight * value
        sums[name] = sums.get(name, 0.0) + float(value.detach()) * count
    return loss


def lipschitz_margin(eps: float, lipschitz: float) -> float:
    """m = √2·ε·L: the logit margin f_y − max_{k≠y} f_k above which an L-Lipschitz (L2) classifier keeps its class
    on the whole ε-ball (Tsuzuku, Sato & Sugiyama, "Lipschitz-Margin Training", 2018; the certificate of
    :mod:`evaluation.certified`). Certified training of Lipschitz networks asks the training margins for it:
    Prach, Brau, Buttazzo & Lampert, "1-Lipschitz Layers Compared" (2023), train to margins √2·ε of their
    1-Lipschitz networks; Meunier et al., "A Dynamical System Perspective for Lipschitz Neural Networks" (CPL,
    2022) and Araujo et al., "A Unified Algebraic Perspective on Lipschitz Neural Networks" (SLL, 2023) with the
    multi-margin hinge (:func:`multi_margin_hinge`) at such a margin."""
    return math.sqrt(2.0) * eps * lipschitz


def multi_margin_hinge(logits: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """ℓ(f, y) = (1/C) Σ_{j≠y} max(0, m − (f_y − f_j)), averaged over the batch (C classes): the multi-class hinge
    with which CPL (Meunier et al., 2022, §5) and SLL (Araujo et al., "A Unified Algebraic Perspective on
    Lipschitz Neural Networks", 2023, §5) train their 1-Lipschitz networks, zero once every other logit is at least
    ``margin`` below the true one; with m = :func:`lipschitz_margin` (√2·ε·L, Prach et al., "1-Lipschitz Layers
    Compared", 2023) that is the margin the certificate needs at radius ε. ``torch.nn.functional.multi_margin_loss``
    with p = 1."""
    return F.multi_margin_loss(logits, y, p=1, margin=margin)


def full_precision(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (a step under ``train.amp``) in float32 for the loss; others unchanged (no copy)."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


class TaskLoss:
    """The loss of one batch's outputs for ``task``: classification takes ``train.loss`` (cross-entropy of
    ``logit_scale``·logits with ``label_smoothing``, or :func:`multi_margin_hinge` at ``train.margin``);
    regression and denoising the mean squared error (mean over samples and output entries).

    A margin given as ``{"eps": ε}`` is :func:`lipschitz_margin` with L = ``models.lipschitz_bound(model)`` (sound,
    exact norms in float64), recomputed by :meth:`start_epoch` from the weights at the start of every epoch
    (:attr:`margin` holds it; the epoch's report carries it)."""

    def __init__(self, spec: TrainSpec, task: str) -> None:
        self.spec = spec
        self.classification = task == "classification"
        self.margin: float | None = None
        if self.classification and spec.loss == "multi_margin" and spec.margin is not None:
            self.margin = spec.margin.logits

    def start_epoch(self, model: nn.Module) -> None:
        margin = self.spec.margin
        if not self.classification or self.spec.loss != "multi_margin" or margin is None or margin.eps is None:
            return
        try:
            bound = lipschitz_bound(model)
        except Exception as exc:  # LipschitzBoundUnavailable: no sound bound of this model
            raise ValueError(
                f"train.margin.eps needs the model's Lipschitz bound ({exc}); give the margin in logit units "
                "(train.margin.logits) instead"
            ) from exc
        self.margin = lipschitz_margin(margin.eps, bound)

    def __call__(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        outputs = full_precision(outputs)
        if not self.classification:
            return F.mse_loss(outputs, target)
        if self.spec.loss == "multi_margin":
            return multi_margin_hinge(outputs, target, self.margin)
        return F.cross_entropy(self.spec.logit_scale * outputs, target, label_smoothing=self.spec.label_smoothing)


__all__ = [
    "TaskLoss",
    "add_regularizers",
    "full_precision",
    "lipschitz_margin",
    "multi_margin_hinge",
    "stochastic_state_penalty",
]
