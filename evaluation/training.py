"""A seeded training loop for classification."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from evaluation.datasets import Dataset


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def stochastic_state_penalty(
    states: list[torch.Tensor], perturbed: list[torch.Tensor], power: float = 1.0
) -> torch.Tensor:
    """R_rnd = Σ_t (t/T)^r ‖y_t − ỹ_t‖² (mean over the batch): Reshniak & Webster, "Robust learning with implicit
    residual networks" (seed 002, eq. 10), penalising how perturbations of the input grow along the layers."""
    T = len(states) - 1
    total = states[0].new_zeros(())
    for t in range(1, T + 1):
        total = total + (t / T) ** power * (states[t] - perturbed[t]).pow(2).sum(dim=1).mean()
    return total


def train_classifier(
    model: nn.Module,
    data: Dataset,
    train_spec,
    device: torch.device,
    progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """Train ``model`` with cross-entropy (+ the spec's regularizers); return a summary dict.

    Raises:
        TrainingDiverged: the loss is not finite.
    """
    gen = torch.Generator(device="cpu").manual_seed(train_spec.seed)
    x, y = data.x_train.to(device), data.y_train.to(device)
    n = len(x)
    batch = train_spec.batch_size or n
    params = [p for p in model.parameters() if p.requires_grad]
    if train_spec.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=train_spec.lr, weight_decay=train_spec.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=train_spec.lr, momentum=0.9, weight_decay=train_spec.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    stochastic = train_spec.regularizers.stochastic
    scale = train_spec.logit_scale  # cross-entropy of scale·logits
    model.train()
    start = time.perf_counter()
    loss_value = float("nan")
    for epoch in range(1, train_spec.epochs + 1):
        order = torch.randperm(n, generator=gen).to(device) if batch < n else torch.arange(n, device=device)
        epoch_loss = 0.0
        for i in range(0, n, batch):
            idx = order[i : i + batch]
            xb, yb = x[idx], y[idx]
            if stochastic is not None:
                logits, states = model(xb, return_states=True)
                noise = torch.randn(xb.shape, generator=gen).to(device) * stochastic.sigma
                _, noisy_states = model(xb + noise, return_states=True)
                loss = loss_fn(scale * logits, yb) + stochastic.weight * stochastic_state_penalty(states, noisy_states)
            else:
                loss = loss_fn(scale * model(xb), yb)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"training diverged: loss is {float(loss)} at epoch {epoch}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            epoch_loss += float(loss) * len(idx)
        loss_value = epoch_loss / n
        if not math.isfinite(loss_value):
            raise TrainingDiverged(f"training diverged: loss is {loss_value} at epoch {epoch}")
        if progress is not None:
            progress({"phase": "train", "epoch": epoch, "epochs": train_spec.epochs, "loss": loss_value})
        if should_stop is not None and should_stop():
            break
    model.eval()
    with torch.no_grad():
        train_acc = float((model(x).argmax(1) == y).float().mean())
    return {"train_loss": loss_value, "train_acc": train_acc, "train_seconds": time.perf_counter() - start}
