"""AutoAttack-style ensemble (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", ICML 2020) from torchattacks' components, through the PGD adapter's box.

The standard ensemble runs APGD-CE, APGD-T (targeted DLR loss), FAB-T and Square (a query-only random search) in
turn, each on the samples that every earlier attack failed on; a sample is robust only if it is classified
correctly clean and by every attack that ran. torchattacks' ``AutoAttack`` wrapper always builds all four, but
two of them do not fit every problem, so this module runs each one only where torchattacks supports the shape
and reports which attacks ran and why others did not:

* APGD-T's targeted DLR loss reads the 4th-largest logit: it needs at least 4 classes;
* FAB-T attacks the other classes one by one: it needs at least 2;
* Square samples square windows of an image (N, C, H, W): the flat features are laid out as the most nearly
  square H × W grid (norms do not depend on the layout); it needs H ≥ 2 for L∞ and H ≥ 5 for L2 (its L2
  initialisation tiles 5 × 5 windows).

Like PGD, every attack sees the data through :class:`evaluation.pgd.AttackBox` (one uniform affine map into
[0, 1], so ε in input units is ε/scale in the box).
"""

from __future__ import annotations

import math

import torch
import torchattacks
from torch import nn

from core.metrics import metric_key
from evaluation.pgd import AttackBox, attack_box, correct_when_clean

#: this evaluation's protocol revision: bump it when a change alters its numbers on purpose (core/protocol.py)
PROTOCOL_REVISION = 1

ENSEMBLE = ("apgd-ce", "apgd-t", "fab-t", "square")


class GridView(nn.Module):
    """(N, 1, H, W) ↦ the box model on (N, 1, 1, H·W): Square needs an image layout, the box holds flat rows."""

    def __init__(self, box: AttackBox):
        super().__init__()
        self.box = box

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.box(v.reshape(len(v), 1, 1, -1))


def grid_shape(features: int) -> tuple[int, int]:
    """The most nearly square H × W = ``features`` with H ≤ W."""
    height = max(h for h in range(1, math.isqrt(features) + 1) if features % h == 0)
    return height, features // height


def skip_reason(name: str, norm: str, n_classes: int, features: int) -> str | None:
    """Why torchattacks cannot run attack ``name`` on this problem (``None``: it can)."""
    if name == "apgd-t" and n_classes < 4:
        return f"APGD-T's targeted DLR loss needs ≥ 4 classes (this task has {n_classes})"
    if name == "fab-t" and n_classes < 2:
        return "FAB-T needs ≥ 2 classes"
    if name == "square":
        height, width = grid_shape(features)
        need = 2 if norm == "Linf" else 5
        if height < need:
            return f"Square needs an image of side ≥ {need} for {norm}; {features} features lay out as {height}×{width}"
    return None


def build_attack(
    name: str, target: nn.Module, norm: str, eps_box: float, n_classes: int, seed: int, steps: int, queries: int
) -> torchattacks.attack.Attack:
    """One member of the ensemble with AutoAttack's standard settings (one restart each)."""
    if name == "apgd-ce":
        return torchattacks.APGD(target, norm=norm, eps=eps_box, steps=steps, n_restarts=1, seed=seed, loss="ce")
    if name == "apgd-t":
        return torchattacks.APGDT(
            target, norm=norm, eps=eps_box, steps=steps, n_restarts=1, seed=seed, n_classes=n_classes
        )
    if name == "fab-t":
        return torchattacks.FAB(
            target,
            norm=norm,
            eps=eps_box,
            steps=steps,
            n_restarts=1,
            seed=seed,
            multi_targeted=True,
            n_classes=n_classes,
        )
    if name == "square":
        return torchattacks.Square(target, norm=norm, eps=eps_box, n_queries=queries, n_restarts=1, seed=seed)
    raise ValueError(f"unknown attack {name!r}; choose from {', '.join(ENSEMBLE)}")


def autoattack_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps_list: list[float],
    n_classes: int,
    attacks: tuple[str, ...] = ENSEMBLE,
    steps: int = 100,
    queries: int = 5000,
    seed: int = 0,
    valid_range: tuple[float, float] | None = None,
    clean_logits: torch.Tensor | None = None,
    per_sample: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, float], dict]:
    """Robust accuracy under the ensemble for each ε: ``autoattack_<norm>_acc@ε``. ``clean_logits``: the eval-mode
    model's logits on ``x`` when already computed (:func:`evaluation.pgd.correct_when_clean`). ``per_sample``, when
    given, receives each metric's per-sample robust mask (for :mod:`evaluation.outcomes`).

    Returns ``(metrics, settings)``; settings name the attacks that ran, those skipped (with the reason), and per ε
    how many samples each attack flipped.
    """
    model.eval()
    box = attack_box(model, x, max(eps_list), valid_range)
    u = box.to_box(x)
    features = u[0].numel()
    height, width = grid_shape(features)
    skipped = {name: why for name in attacks if (why := skip_reason(name, norm, n_classes, features)) is not None}
    ran = [name for name in attacks if name not in skipped]
    clean_correct = correct_when_clean(box, u, y, clean_logits)
    metrics, per_eps = {}, {}
    with torch.random.fork_rng(devices=[u.device] if u.device.type == "cuda" else []):
        for eps in eps_list:
            robust = clean_correct.clone()
            flipped = {}
            for name in ran:
                idx = robust.nonzero()[:, 0]
                if len(idx) == 0:
                    flipped[name] = 0
                    continue
                torch.manual_seed(seed)
                if name == "square":
                    target, inputs = GridView(box), u[idx].reshape(len(idx), 1, height, width)
                else:
                    target, inputs = box, u[idx]
                attack = build_attack(name, target, norm, eps / box.scale, n_classes, seed, steps, queries)
                adv = attack(inputs, y[idx])
                with torch.no_grad():
                    still = target(adv).argmax(1) == y[idx]
                flipped[name] = int((~still).sum())
                robust[idx] = still
            metrics[metric_key(f"autoattack_{norm.lower()}_acc", eps)] = float(robust.float().mean())
            if per_sample is not None:
                per_sample[metric_key(f"autoattack_{norm.lower()}_acc", eps)] = robust
            per_eps[f"{eps:g}"] = {"flipped": flipped}
    settings = {
        "library": f"torchattacks {torchattacks.__version__}",
        "attacks": ran,
        "skipped": skipped,
        "norm": norm,
        "apgd_fab_steps": steps,
        "square_queries": queries,
        "seed": seed,
        "eps": per_eps,
        "box": {"low": box.low, "scale": box.scale},
    }
    return metrics, settings


__all__ = ["ENSEMBLE", "autoattack_accuracy", "grid_shape", "skip_reason"]
