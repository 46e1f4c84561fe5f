"""The optimizer and the learning-rate schedule of ``train`` (``optimizer``, ``lr``, ``weight_decay``, ``momentum``,
``nesterov``, ``schedule``), from ``torch.optim``.

Every schedule is **stepped after each optimizer step** (each batch): sizes given in epochs become
``epochs × steps_per_epoch`` steps, so a warm-up may end mid-epoch and one-cycle rises smoothly. A checkpoint
(taken between epochs) holds the scheduler's ``state_dict``, so a resumed job goes on at the same step.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim import lr_scheduler

from core.spec import TrainSpec

#: OneCycleLR starts at lr / this (torch's default ``div_factor``)
ONE_CYCLE_DIV = 25.0
#: and ends at lr / ONE_CYCLE_DIV / this unless ``min_lr`` says otherwise (torch's default ``final_div_factor``)
ONE_CYCLE_FINAL_DIV = 1e4


def build_optimizer(params: Iterable[torch.nn.Parameter], spec: TrainSpec) -> torch.optim.Optimizer:
    """Adam (L2 ``weight_decay`` in the gradient), AdamW (decoupled weight decay, Loshchilov & Hutter 2019) or
    SGD with ``momentum`` (0.9 by default, as before the option existed) and optionally Nesterov's."""
    params = list(params)
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.SGD(
        params, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov, weight_decay=spec.weight_decay
    )


def warmup_steps(spec: TrainSpec, steps_per_epoch: int) -> int:
    """Optimizer steps of the schedule's warm-up: ``warmup_epochs`` × steps per epoch, rounded, and at least one
    step short of training (one-cycle: at least two, OneCycleLR's rise runs from step 0 to step warm − 1)."""
    schedule = spec.schedule
    if schedule is None:
        return 0
    steps = min(round(schedule.warmup(spec.epochs) * steps_per_epoch), spec.epochs * steps_per_epoch - 1)
    return max(steps, 2) if schedule.kind == "one_cycle" else steps


def build_schedule(
    opt: torch.optim.Optimizer, spec: TrainSpec, steps_per_epoch: int
) -> lr_scheduler.LRScheduler | None:
    """The spec's schedule over ``spec.epochs × steps_per_epoch`` optimizer steps (None: constant ``lr``).

    * cosine: [LinearLR warm-up →] CosineAnnealingLR(T_max = the steps after warm-up, eta_min = ``min_lr``);
    * step: [LinearLR warm-up →] StepLR(step_size = ``step_size`` epochs of steps, ``gamma``);
    * one_cycle: OneCycleLR(max_lr = ``lr``, pct_start = warm-up steps / all steps, cosine both ways, from
      lr/25 to ``lr`` and down to ``min_lr``); momentum is left as the optimizer has it (``cycle_momentum=False``).
    """
    schedule = spec.schedule
    if schedule is None:
        return None
    total = spec.epochs * steps_per_epoch
    warm = warmup_steps(spec, steps_per_epoch)
    if schedule.kind == "one_cycle":
        if total < 3:
            raise ValueError(
                f"train.schedule kind 'one_cycle' needs at least 3 optimizer steps (epochs × batches per epoch); "
                f"this training has {total}: set train.batch_size or more train.epochs"
            )
        start = spec.lr / ONE_CYCLE_DIV
        final_div = start / schedule.min_lr if schedule.min_lr else ONE_CYCLE_FINAL_DIV
        return lr_scheduler.OneCycleLR(
            opt,
            max_lr=spec.lr,
            total_steps=total,
            pct_start=warm / total,
            anneal_strategy="cos",
            div_factor=ONE_CYCLE_DIV,
            final_div_factor=final_div,
            cycle_momentum=False,
        )
    if schedule.kind == "cosine":
        main: lr_scheduler.LRScheduler = lr_scheduler.CosineAnnealingLR(
            opt, T_max=total - warm, eta_min=schedule.min_lr or 0.0
        )
    else:
        main = lr_scheduler.StepLR(opt, step_size=schedule.step_size * steps_per_epoch, gamma=schedule.gamma or 0.1)
    if warm == 0:
        return main
    warmup = lr_scheduler.LinearLR(opt, start_factor=schedule.warmup_start, end_factor=1.0, total_iters=warm)
    return lr_scheduler.SequentialLR(opt, [warmup, main], milestones=[warm])


__all__ = ["build_optimizer", "build_schedule", "warmup_steps"]
