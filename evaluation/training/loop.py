"""The seeded training loop: batches from :mod:`evaluation.training.data`, the optimizer and schedule of
:mod:`evaluation.training.optim`, the loss of :mod:`evaluation.training.losses`, mixed precision of
:mod:`evaluation.training.precision`, checkpoints of :mod:`evaluation.checkpoints`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from core.spec import TrainSpec
from evaluation.batching import batch_slices
from evaluation.checkpoints import Checkpointer
from evaluation.datasets import Dataset
from evaluation.training.data import augment_images, gaussian_augmentation, training_loader
from evaluation.training.diagnostics import SolverLog, TrainingDiverged
from evaluation.training.losses import TaskLoss, add_regularizers, stochastic_state_penalty
from evaluation.training.optim import build_optimizer, build_schedule
from evaluation.training.precision import Precision, training_precision

#: the accuracy (MSE) pass after training runs over the training set this many samples at a time; a set that fits
#: in one chunk gets the single forward pass it always had
FINAL_PASS_CHUNK = 4096


def _state(epoch: int, log: dict, generators: dict[str, torch.Generator], **stateful) -> dict:
    """Everything training needs to continue bit for bit after ``epoch``: each stateful object's ``state_dict()``
    (``model``, ``optimizer``, ``scheduler``, ``scaler``, ``solver_log``; None ones are left out), the generators'
    states, the global CPU RNG and (when CUDA is in use) every CUDA device's RNG, and ``log`` (the last epoch's loss
    and regularizer values, which the summary reports)."""
    rng = {"cpu": torch.get_rng_state(), "generators": {k: g.get_state() for k, g in generators.items()}}
    if torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    state = {k: obj.state_dict() for k, obj in stateful.items() if obj is not None}
    return {**state, "epoch": epoch, "rng": rng, "log": log}


def _restore(state: dict, generators: dict[str, torch.Generator], **stateful) -> tuple[int, dict]:
    """Put a checkpoint's :func:`_state` back into the live objects; returns its epoch and ``log``. An object the
    checkpoint has no entry for (e.g. a scheduler the spec did not have) raises ``KeyError``: the spec hash that
    :class:`~evaluation.checkpoints.Checkpointer` checks makes that a bug, not a user error."""
    for key, obj in stateful.items():
        if obj is not None:
            obj.load_state_dict(state[key])
    rng = state["rng"]
    torch.set_rng_state(rng["cpu"])
    for key, gen in generators.items():
        gen.set_state(rng["generators"][key])
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return int(state["epoch"]), dict(state["log"])


def _announce_resume(progress: Callable[[dict], None] | None, epoch: int) -> Callable[[dict], None] | None:
    """``progress`` with ``resumed_from: epoch`` in every training report from now on (the job page and the CLI
    show "resumed from epoch k" while the rest trains)."""
    if progress is None:
        return None

    def report(event: dict) -> None:
        progress({**event, "resumed_from": epoch} if event.get("phase") == "train" else event)

    return report


def optimizer_step(
    loss: torch.Tensor,
    opt: torch.optim.Optimizer,
    params: list[nn.Parameter],
    clip_grad_norm: float | None,
    scaler: torch.amp.GradScaler | None,
) -> None:
    """Backward, optionally clip the gradient's global L2 norm to ``clip_grad_norm`` (of the true gradient: a
    float16 scaler unscales first), and step."""
    if scaler is not None:
        scaler.scale(loss).backward()
        if clip_grad_norm is not None:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(params, clip_grad_norm)
        scaler.step(opt)
        scaler.update()
        return
    loss.backward()
    if clip_grad_norm is not None:
        nn.utils.clip_grad_norm_(params, clip_grad_norm)
    opt.step()


def final_fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, classification: bool) -> float:
    """Accuracy (classification) or mean squared error of the eval-mode ``model`` on ``(x, y)``, without autocast,
    :data:`FINAL_PASS_CHUNK` samples at a time."""
    model.eval()
    with torch.no_grad():
        if len(x) <= FINAL_PASS_CHUNK:
            x, y = x.to(device), y.to(device)
            if classification:
                return float((model(x).argmax(1) == y).float().mean())
            return float((model(x) - y).pow(2).mean())
        total = 0.0
        for part in batch_slices(len(x), FINAL_PASS_CHUNK):
            xs, ys = x[part].to(device), y[part].to(device)
            if classification:
                total += float((model(xs).argmax(1) == ys).sum())
            else:
                total += float((model(xs) - ys).double().pow(2).sum())
        return total / (len(x) if classification else y.numel())


def train_classifier(
    model: nn.Module,
    data: Dataset,
    train_spec: TrainSpec,
    device: torch.device,
    progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    task: str = "classification",
    checkpointer: Checkpointer | None = None,
    precision: Precision | None = None,
) -> dict:
    """Train ``model`` on the task's loss (:class:`~evaluation.training.losses.TaskLoss`: cross-entropy or the
    certified multi-margin hinge for ``task="classification"``, the mean squared error for ``"regression"``,
    ``"denoising"``) + the spec's regularizers; return a summary dict: ``train_loss`` (the last epoch's),
    ``train_acc`` or ``train_mse`` on the training set after training, ``train_seconds``,
    ``train_images_per_second`` (training samples through the optimizer per second of the epochs run here).

    The batches come from a DataLoader (:func:`~evaluation.training.data.training_loader`; the same batches as
    before it, whatever ``train.loader_workers``), augmented per batch (crops and flips, then with ``noise_sigma``
    > 0 Gaussian data augmentation x + noise_sigma·N(0, I), fresh noise each time, as Cohen, Rosenfeld & Kolter
    train the base classifiers of randomized smoothing; the training accuracy is still taken on clean x); each step
    runs under ``precision``
    (default: from ``train.amp`` and ``device``), clips the gradient (``train.clip_grad_norm``), steps the
    optimizer and then the schedule (per batch).

    With a ``checkpointer`` training resumes from its newest state for this spec (epoch k: it goes on at k + 1,
    every report carries ``resumed_from: k``) and saves one after every ``checkpointer.every`` epochs and the last;
    the state holds the model, optimizer, schedule, gradient scaler, solver totals and every generator.

    Raises:
        TrainingDiverged: the loss is not finite.
    """
    gen = torch.Generator(device="cpu").manual_seed(train_spec.seed)
    x, y = data.x_train, data.y_train
    n = len(x)
    batch = train_spec.batch_size or n
    augment = train_spec.augment
    if augment is not None and x.dim() != 4:
        raise ValueError(f"train.augment needs images (N, C, H, W); this dataset's inputs are {tuple(x.shape[1:])}")
    loader = training_loader(x, y, batch, gen, device, train_spec.loader_workers, train_spec.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(params, train_spec)
    scheduler = build_schedule(opt, train_spec, len(loader))
    precision = precision or training_precision(train_spec.amp, device)
    loss_fn = TaskLoss(train_spec, task)
    classification = task == "classification"
    stochastic = train_spec.regularizers.stochastic
    named = train_spec.regularizers.named()  # R_fp, divergence, TV, R_F, R_λ, R_n (models.regularizers)
    solver_log = SolverLog(model)
    reg_log: dict[str, float] = {}
    model.train()
    start = time.perf_counter()
    loss_value = float("nan")
    # checkpoints (evaluation.checkpoints): resume after the newest one, save every `checkpointer.every` epochs
    stateful = {"model": model, "optimizer": opt, "scheduler": scheduler, "scaler": precision.scaler,
                "solver_log": solver_log}  # fmt: skip
    generators, first = {"train": gen}, 1
    if checkpointer is not None and (state := checkpointer.load()) is not None:
        done, logged = _restore(state, generators, **stateful)
        loss_value, reg_log, first = logged["loss"], logged["reg"], done + 1
        progress = _announce_resume(progress, done)
        if progress is not None:
            progress({"phase": "train", "epoch": done, "epochs": train_spec.epochs})
    seen, epochs_start = 0, time.perf_counter()
    for epoch in range(first, train_spec.epochs + 1):
        loss_fn.start_epoch(model)  # a margin of √2·ε·L: L of this epoch's weights
        epoch_loss = 0.0
        reg_sums: dict[str, float] = {}
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            if augment is not None:
                xb = augment_images(xb, augment.crop_padding, augment.flip, gen)
            if train_spec.noise_sigma > 0:
                xb = gaussian_augmentation(xb, train_spec.noise_sigma, gen)
            with precision.autocast():
                if stochastic is not None:
                    logits, states = model(xb, return_states=True)
                    copies = xb.repeat(stochastic.streams, *([1] * (xb.dim() - 1)))  # P streams, one forward
                    noise = torch.randn(copies.shape, generator=gen).to(device) * stochastic.sigma
                    _, noisy_states = model(copies + noise, return_states=True)
                    penalty = stochastic_state_penalty(states, noisy_states, stochastic.power)
                    loss = loss_fn(logits, yb) + stochastic.weight * penalty
                elif named:
                    logits, states = model(xb, return_states=True)
                    loss = loss_fn(logits, yb)
                else:
                    loss = loss_fn(model(xb), yb)
                if named:
                    loss = add_regularizers(loss, model, states, named, gen, reg_sums, len(yb))
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"training diverged: loss is {float(loss)} at epoch {epoch}")
            opt.zero_grad(set_to_none=True)
            optimizer_step(loss, opt, params, train_spec.clip_grad_norm, precision.scaler)
            if scheduler is not None:
                scheduler.step()
            epoch_loss += float(loss.detach()) * len(yb)
            seen += len(yb)
        loss_value = epoch_loss / n
        if not math.isfinite(loss_value):
            raise TrainingDiverged(f"training diverged: loss is {loss_value} at epoch {epoch}")
        reg_log = {f"reg_{name}": total / n for name, total in reg_sums.items()}
        solver_diag = solver_log.epoch()
        if progress is not None:
            extra = {"lr": opt.param_groups[0]["lr"]} if scheduler is not None else {}
            if loss_fn.margin is not None:
                extra["margin"] = loss_fn.margin
            progress(
                {
                    "phase": "train",
                    "epoch": epoch,
                    "epochs": train_spec.epochs,
                    "loss": loss_value,
                    **extra,
                    **reg_log,
                    **solver_diag,
                }
            )
        if checkpointer is not None and checkpointer.due(epoch, train_spec.epochs):
            checkpointer.save(epoch, _state(epoch, {"loss": loss_value, "reg": reg_log}, generators, **stateful))
        if should_stop is not None and should_stop():
            break
    epochs_seconds = time.perf_counter() - epochs_start
    diagnostics = {**reg_log, **solver_log.finish()}  # last epoch's regularizer values, training's solver totals
    if seen:
        diagnostics["train_images_per_second"] = seen / max(epochs_seconds, 1e-9)
    fit = final_fit(model, x, y, device, classification)
    return {
        "train_loss": loss_value,
        "train_acc" if classification else "train_mse": fit,
        "train_seconds": time.perf_counter() - start,
        **diagnostics,
    }


__all__ = ["FINAL_PASS_CHUNK", "final_fit", "optimizer_step", "train_classifier"]
