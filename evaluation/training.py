"""A seeded training loop: cross-entropy for classification, mean squared error for regression and denoising."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from evaluation.datasets import Dataset
from models.regularizers import regularization_terms
from models.steps import SolverStats


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


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


def gaussian_augmentation(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """x + σ·N(0, I), the noise drawn from ``gen`` on the CPU (the same numbers on any device) and not clipped:
    the inputs randomized smoothing will classify (Cohen, Rosenfeld & Kolter, ICML 2019, section 4: base
    classifiers trained with Gaussian data augmentation at the σ they are smoothed with)."""
    return x + sigma * torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)


class SolverLog:
    """Solver diagnostics of a model's implicit steps during training: :meth:`epoch` returns the worst forward /
    backward iterations and final residuals of the epoch and its count of non-converged solves (each of which also
    raised a ``RuntimeWarning``), then resets the steps' stats; :meth:`finish` returns the same over the whole
    training (``solver_train_*``) and puts those totals back into the steps, so that the runner's ``solver_*``
    metrics cover training and evaluation."""

    def __init__(self, model: nn.Module):
        stats = model.solver_stats() if hasattr(model, "solver_stats") else []
        self.stats = list({id(s): s for s in stats}.values())
        self.totals = [SolverStats() for _ in self.stats]

    @staticmethod
    def summary(stats: list[SolverStats], prefix: str) -> dict[str, float]:
        if not stats:
            return {}
        return {
            f"{prefix}forward_iterations": float(max(s.forward_iterations for s in stats)),
            f"{prefix}forward_residual": max(s.forward_residual for s in stats),
            f"{prefix}backward_iterations": float(max(s.backward_iterations for s in stats)),
            f"{prefix}backward_residual": max(s.backward_residual for s in stats),
            f"{prefix}failures": float(sum(len(s.failures) for s in stats)),
        }

    def epoch(self) -> dict[str, float]:
        out = self.summary(self.stats, "solver_")
        for stats, total in zip(self.stats, self.totals, strict=True):
            total.merge(stats)
            stats.reset()
        return out

    def finish(self) -> dict[str, float]:
        self.epoch()  # anything recorded since the last epoch
        for stats, total in zip(self.stats, self.totals, strict=True):
            stats.merge(total)
        return self.summary(self.totals, "solver_train_")


def augment_images(x: torch.Tensor, crop_padding: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """A batch of images (B, C, H, W), each randomly cropped back to H×W from its zero-padded copy (``crop_padding``
    pixels on every side: a shift of up to ± that much, zeros coming in) and, with ``flip``, mirrored left-right
    with probability ½; the offsets and flips are drawn from ``gen`` (on the CPU: seeded, reproducible on any
    device). He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition" (2016), §4.2."""
    n, _, height, width = x.shape
    if crop_padding > 0:
        p = crop_padding
        padded = nn.functional.pad(x, (p, p, p, p)).permute(0, 2, 3, 1)  # (B, H + 2p, W + 2p, C)
        top = torch.randint(0, 2 * p + 1, (n,), generator=gen).to(x.device)
        left = torch.randint(0, 2 * p + 1, (n,), generator=gen).to(x.device)
        rows = (top[:, None] + torch.arange(height, device=x.device))[:, :, None]  # (B, H, 1)
        cols = (left[:, None] + torch.arange(width, device=x.device))[:, None, :]  # (B, 1, W)
        batch = torch.arange(n, device=x.device)[:, None, None]
        x = padded[batch, rows, cols].permute(0, 3, 1, 2).contiguous()
    if flip:
        mirrored = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        x = torch.where(mirrored[:, None, None, None], x.flip(3), x)
    return x


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


def train_classifier(
    model: nn.Module,
    data: Dataset,
    train_spec,
    device: torch.device,
    progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    task: str = "classification",
) -> dict:
    """Train ``model`` with cross-entropy (``task="classification"``) or the mean squared error (``"regression"``,
    ``"denoising"``: mean over samples and output entries), + the spec's regularizers; return a summary dict
    (``train_acc`` or ``train_mse`` on the training set after training). With ``noise_sigma`` > 0 every batch is
    trained on x + noise_sigma·N(0, I), fresh noise each time (Gaussian data augmentation, as Cohen, Rosenfeld &
    Kolter train the base classifiers of randomized smoothing); the training accuracy is still taken on clean x.

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
    classification = task == "classification"
    loss_fn = nn.CrossEntropyLoss() if classification else nn.MSELoss()
    stochastic = train_spec.regularizers.stochastic
    named = train_spec.regularizers.named()  # R_fp, divergence, TV, R_F, R_λ, R_n (models.regularizers)
    solver_log = SolverLog(model)
    reg_log: dict[str, float] = {}
    scale = train_spec.logit_scale  # cross-entropy of scale·logits
    augment = train_spec.augment
    if augment is not None and x.dim() != 4:
        raise ValueError(f"train.augment needs images (N, C, H, W); this dataset's inputs are {tuple(x.shape[1:])}")
    model.train()
    start = time.perf_counter()
    loss_value = float("nan")
    for epoch in range(1, train_spec.epochs + 1):
        order = torch.randperm(n, generator=gen).to(device) if batch < n else torch.arange(n, device=device)
        epoch_loss = 0.0
        reg_sums: dict[str, float] = {}
        for i in range(0, n, batch):
            idx = order[i : i + batch]
            xb, yb = x[idx], y[idx]
            if augment is not None:
                xb = augment_images(xb, augment.crop_padding, augment.flip, gen)
            if train_spec.noise_sigma > 0:
                xb = gaussian_augmentation(xb, train_spec.noise_sigma, gen)
            if stochastic is not None:
                logits, states = model(xb, return_states=True)
                copies = xb.repeat(stochastic.streams, *([1] * (xb.dim() - 1)))  # P streams, one forward
                noise = torch.randn(copies.shape, generator=gen).to(device) * stochastic.sigma
                _, noisy_states = model(copies + noise, return_states=True)
                penalty = stochastic_state_penalty(states, noisy_states, stochastic.power)
                loss = loss_fn(scale * logits, yb) + stochastic.weight * penalty
            elif named:
                logits, states = model(xb, return_states=True)
                loss = loss_fn(scale * logits, yb)
            else:
                loss = loss_fn(scale * model(xb), yb)
            if named:
                loss = add_regularizers(loss, model, states, named, gen, reg_sums, len(idx))
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"training diverged: loss is {float(loss)} at epoch {epoch}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            epoch_loss += float(loss) * len(idx)
        loss_value = epoch_loss / n
        if not math.isfinite(loss_value):
            raise TrainingDiverged(f"training diverged: loss is {loss_value} at epoch {epoch}")
        reg_log = {f"reg_{name}": total / n for name, total in reg_sums.items()}
        solver_diag = solver_log.epoch()
        if progress is not None:
            progress(
                {
                    "phase": "train",
                    "epoch": epoch,
                    "epochs": train_spec.epochs,
                    "loss": loss_value,
                    **reg_log,
                    **solver_diag,
                }
            )
        if should_stop is not None and should_stop():
            break
    diagnostics = {**reg_log, **solver_log.finish()}  # last epoch's regularizer values, training's solver totals
    model.eval()
    with torch.no_grad():
        if not classification:
            train_mse = float((model(x) - y).pow(2).mean())
            return {
                "train_loss": loss_value,
                "train_mse": train_mse,
                "train_seconds": time.perf_counter() - start,
                **diagnostics,
            }
        train_acc = float((model(x).argmax(1) == y).float().mean())
    return {
        "train_loss": loss_value,
        "train_acc": train_acc,
        "train_seconds": time.perf_counter() - start,
        **diagnostics,
    }
