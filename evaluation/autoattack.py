"""The strong attack suite: Croce & Hein's standard protocol ("Reliable evaluation of adversarial robustness with
an ensemble of diverse parameter-free attacks", ICML 2020) from torchattacks' components, through the PGD
adapter's box.

The suite runs, in this order, each member on the samples that every earlier member failed on (a sample is robust
only if it is classified correctly clean and by every attack that ran):

* ``apgd-ce``: APGD on the cross-entropy;
* ``apgd-dlr``: APGD on the scale-invariant DLR margin loss (≥ 3 classes: it reads the 3rd-largest logit);
* ``apgd-cw``: APGD on the Carlini–Wagner margin (:func:`cw_margin_loss`), the margin loss of 2-class tasks, where
  DLR is undefined (spirals get a margin attack too);
* ``apgd-t``: APGD on the targeted DLR loss against each of the n − 1 other classes (≥ 4 classes);
* ``fab-t``: targeted FAB against each of the n − 1 other classes (≥ 2 classes);
* ``square``: Square, a query-only random search (5000 queries); it sees images (N, C, H, W): image data as they
  are, flat features as one channel laid out as the most nearly square H × W grid (norms do not depend on the
  layout; :func:`square_layout`); it needs H ≥ 2 for L∞ and H ≥ 5 for L2 (its L2 initialisation tiles 5 × 5
  windows), and its first square, of side about √(p_init·H·W), must fit in the image.

torchattacks' own defaults would silently weaken the protocol (APGD, APGD-T and FAB default to 10 steps and
``n_classes=10``, i.e. 9 target classes whatever the task): :func:`build_attack` passes every setting explicitly and
the result records them (``members``). A member that does not apply to the task is skipped with its reason
(``skipped``), never run on a shape it cannot handle. Every adversarial example is checked by this module (inside
the box, within ε, misclassified) before it counts.

The suite also attacks at a *sanity* ε (:func:`sanity_eps`: the whole data range), where any non-constant classifier
must fall to chance; :mod:`evaluation.reliability` flags a model that does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torchattacks
from torch import nn

from core.metrics import metric_key
from core.spec import SUITE_ATTACKS, SUITE_QUERIES, SUITE_STEPS
from evaluation.batching import EVAL_BATCH, batch_slices
from evaluation.pgd import AttackBox, attack_box, correct_when_clean

#: this evaluation's protocol revision: bump it when a change alters its numbers on purpose (core/protocol.py);
#: 2: Croce & Hein's standard protocol with every torchattacks setting explicit, margin losses, the sanity ε
# revision 3: Square's grid view is in eval mode, so the model stays in eval mode after it (evaluation.pgd, rev. 2)
PROTOCOL_REVISION = 3

#: the standard suite's members, in the order they run
STANDARD = SUITE_ATTACKS
SQUARE_P_INIT = 0.8  # torchattacks' Square: the first squares cover about 80 % of the image


def cw_margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample Carlini–Wagner margin max_{k≠y} z_k − z_y (Carlini & Wagner, "Towards Evaluating the Robustness
    of Neural Networks", IEEE S&P 2017, objective f₆ with κ = 0, untargeted): positive exactly when the sample is
    misclassified; maximised by the attack."""
    true = logits.gather(1, y[:, None])[:, 0]
    others = logits.scatter(1, y[:, None], float("-inf"))
    return others.max(dim=1).values - true


class APGDMargin(torchattacks.APGD):
    """torchattacks' APGD with the Carlini–Wagner margin in place of DLR (its ``loss="dlr"`` hook): DLR divides by
    z_π1 − z_π3 and needs 3 classes."""

    def dlr_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return cw_margin_loss(x, y)


class GridView(nn.Module):
    """(N, C, H, W) ↦ the box model on (N, 1, 1, C·H·W): Square needs an image layout, the box holds flat rows."""

    def __init__(self, box: AttackBox):
        super().__init__()
        self.box = box

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.box(v.reshape(len(v), 1, 1, -1))


def grid_shape(features: int) -> tuple[int, int]:
    """The most nearly square H × W = ``features`` with H ≤ W."""
    height = max(h for h in range(1, math.isqrt(features) + 1) if features % h == 0)
    return height, features // height


def square_layout(sample_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """What Square sees of one sample, (C, H, W): an image as it is (its squares then cover all channels of a patch
    of pixels, as Andriushchenko et al. designed them); flat features as one channel on :func:`grid_shape`."""
    if len(sample_shape) == 3:
        return (int(sample_shape[0]), int(sample_shape[1]), int(sample_shape[2]))
    return (1, *grid_shape(math.prod(sample_shape)))


def square_first_side(norm: str, height: int, width: int) -> int:
    """The side of Square's first (largest) square in torchattacks: round(√(p_init·H·W)), for L2 at least 3 and
    odd."""
    side = round(math.sqrt(SQUARE_P_INIT * height * width))
    if norm == "Linf":
        return max(side, 1)
    side = max(side, 3)
    return side + 1 if side % 2 == 0 else side


def skip_reason(
    name: str, norm: str, n_classes: int, features: int, layout: tuple[int, int, int] | None = None
) -> str | None:
    """Why attack ``name`` does not apply to this problem (``None``: it does); ``layout``: Square's view of one
    sample (:func:`square_layout`; default: the flat features' grid)."""
    if name == "apgd-dlr" and n_classes < 3:
        return f"the DLR loss reads the 3rd-largest logit: needs ≥ 3 classes (this task has {n_classes}); apgd-cw runs"
    if name == "apgd-cw" and n_classes != 2:
        return f"the Carlini–Wagner margin stands in for DLR on 2 classes only (this task has {n_classes}: apgd-dlr)"
    if name == "apgd-t" and n_classes < 4:
        return f"APGD-T's targeted DLR loss needs ≥ 4 classes (this task has {n_classes})"
    if name == "fab-t" and n_classes < 2:
        return "FAB-T needs ≥ 2 classes"
    if name == "square":
        channels, height, width = layout or (1, *grid_shape(features))
        need = 2 if norm == "Linf" else 5
        if min(height, width) < need:
            return f"Square needs an image of side ≥ {need} for {norm}; {features} features lay out as {height}×{width}"
        side = square_first_side(norm, height, width)
        if side > min(height, width):
            return (
                f"Square's first square (side {side} = √(p_init·H·W)) does not fit in the {height}×{width} layout of "
                f"{features} features ({channels} channel(s))"
            )
    return None


def attack_settings(name: str, norm: str, n_classes: int, seed: int, steps: int, queries: int, restarts: int) -> dict:
    """Every keyword :func:`build_attack` passes to torchattacks for member ``name`` (ε aside): recorded as is."""
    common = {"norm": norm, "n_restarts": restarts, "seed": seed}
    if name in ("apgd-ce", "apgd-dlr", "apgd-cw"):
        loss = {"apgd-ce": "ce", "apgd-dlr": "dlr", "apgd-cw": "cw-margin"}[name]
        return {"class": "APGD", **common, "steps": steps, "loss": loss, "eot_iter": 1, "rho": 0.75}
    if name == "apgd-t":
        return {"class": "APGDT", **common, "steps": steps, "n_classes": n_classes, "eot_iter": 1, "rho": 0.75}
    if name == "fab-t":
        return {"class": "FAB", **common, "steps": steps, "multi_targeted": True, "n_classes": n_classes,
                "alpha_max": 0.1, "eta": 1.05, "beta": 0.9}  # fmt: skip
    if name == "square":
        return {"class": "Square", **common, "n_queries": queries, "p_init": SQUARE_P_INIT, "loss": "margin",
                "resc_schedule": True}  # fmt: skip
    raise ValueError(f"unknown attack {name!r}; choose from {', '.join(STANDARD)}")


def build_attack(name: str, target: nn.Module, eps_box: float, settings: dict) -> torchattacks.attack.Attack:
    """Member ``name`` with exactly ``settings`` (:func:`attack_settings`), ε in box units."""
    kwargs = {k: v for k, v in settings.items() if k != "class"}
    if name in ("apgd-ce", "apgd-dlr"):
        return torchattacks.APGD(target, eps=eps_box, **kwargs)
    if name == "apgd-cw":
        return APGDMargin(target, eps=eps_box, **{**kwargs, "loss": "dlr"})  # the dlr hook holds the CW margin
    if name == "apgd-t":
        attack = torchattacks.APGDT(target, eps=eps_box, **kwargs)
    elif name == "fab-t":
        attack = torchattacks.FAB(target, eps=eps_box, **kwargs)
    else:
        return torchattacks.Square(target, eps=eps_box, **kwargs)
    if attack.n_target_classes != settings["n_classes"] - 1 or attack.steps != settings["steps"]:
        raise RuntimeError(f"torchattacks ignored {name}'s settings: {settings}")  # never a silently weaker suite
    return attack


def sanity_eps(x: torch.Tensor, norm: str, valid_range: tuple[float, float] | None) -> float:
    """An ε at which every point of the data's range is reachable: the range's width (L∞), times √d (L2)."""
    low, high = valid_range if valid_range is not None else (float(x.min()), float(x.max()))
    width = high - low
    return float(width if norm == "Linf" else width * math.sqrt(x[0].numel()))


def is_standard(attacks: tuple[str, ...] | list[str], steps: int, queries: int, restarts: int) -> bool:
    """Whether these settings are the full standard protocol (every member, ≥ 100 iterations, ≥ 5000 queries)."""
    return set(STANDARD) <= set(attacks) and steps >= SUITE_STEPS and queries >= SUITE_QUERIES and restarts >= 1


@dataclass
class SuiteOutcome:
    """Per sample at one ε: ``robust`` (clean-correct and no member succeeded) and, per member that ran, the
    samples it flipped."""

    robust: torch.Tensor
    flipped_by: dict[str, torch.Tensor] = field(default_factory=dict)


def _counts(adv: torch.Tensor, inputs: torch.Tensor, norm: str, eps_box: float) -> torch.Tensor:
    """Which adversarial examples are admissible: in the [0, 1] box and within ε (a 1e-5 relative tolerance)."""
    delta = (adv - inputs).flatten(1)
    size = delta.abs().amax(1) if norm == "Linf" else delta.norm(dim=1)
    inside = (adv.flatten(1) >= -1e-6).all(1) & (adv.flatten(1) <= 1 + 1e-6).all(1)
    return inside & (size <= eps_box * (1 + 1e-5) + 1e-7)


def suite_robust(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps_list: list[float],
    n_classes: int,
    attacks: tuple[str, ...] = STANDARD,
    steps: int = SUITE_STEPS,
    queries: int = SUITE_QUERIES,
    restarts: int = 1,
    seed: int = 0,
    valid_range: tuple[float, float] | None = None,
    clean_logits: torch.Tensor | None = None,
    sanity: bool = False,
    batch_size: int | None = None,
) -> tuple[dict[float, SuiteOutcome], dict]:
    """The suite at each ε (and, with ``sanity``, at :func:`sanity_eps`), per sample, ``batch_size`` samples at a
    time (each member reseeded with ``seed`` in every batch: with one batch, an unbatched run).

    Returns ``({ε: SuiteOutcome}, settings)``: settings name the members that ran with every setting passed,
    those skipped with the reason, per ε how many samples each member flipped, and the sanity ε.
    """
    model.eval()
    extra = sanity_eps(x, norm, valid_range) if sanity else None
    levels = sorted(set(eps_list) | ({extra} if extra is not None else set()))
    box = attack_box(model, x, max(levels), valid_range)
    u = box.to_box(x)
    features = u[0].numel()
    layout = square_layout(box.sample_shape)
    skipped = {n: why for n in attacks if (why := skip_reason(n, norm, n_classes, features, layout)) is not None}
    ran = [name for name in attacks if name not in skipped]
    members = {name: attack_settings(name, norm, n_classes, seed, steps, queries, restarts) for name in ran}
    clean_correct = correct_when_clean(box, u, y, clean_logits)
    outcomes, per_eps = {}, {}
    with torch.random.fork_rng(devices=[u.device] if u.device.type == "cuda" else []):
        for eps in levels:
            outcome = SuiteOutcome(robust=clean_correct.clone())
            outcome.flipped_by.update({name: torch.zeros_like(outcome.robust) for name in ran})
            for part in batch_slices(len(u), batch_size):
                for name in ran:
                    idx = part.start + outcome.robust[part].nonzero()[:, 0]
                    if len(idx) == 0:
                        continue
                    torch.manual_seed(seed)
                    if name == "square":
                        target, inputs = GridView(box).eval(), u[idx].reshape(len(idx), *layout)
                    else:
                        target, inputs = box, u[idx]
                    adv = build_attack(name, target, eps / box.scale, members[name])(inputs, y[idx])
                    with torch.no_grad():
                        fooled = (target(adv).argmax(1) != y[idx]) & _counts(adv, inputs, norm, eps / box.scale)
                    outcome.flipped_by[name][idx] = fooled
                    outcome.robust[idx] = ~fooled
            outcomes[eps] = outcome
            per_eps[f"{eps:g}"] = {"flipped": {name: int(m.sum()) for name, m in outcome.flipped_by.items()}}
    settings = {
        "library": f"torchattacks {torchattacks.__version__}",
        "protocol": "standard" if is_standard(attacks, steps, queries, restarts) else "custom",
        "attacks": ran,
        "skipped": skipped,
        "members": members,
        "norm": norm,
        "steps": steps,
        "queries": queries,
        "restarts": restarts,
        "seed": seed,
        "batch_size": batch_size or EVAL_BATCH,
        "eps": per_eps,
        "box": {"low": box.low, "scale": box.scale},
    }
    if extra is not None:
        settings["sanity"] = {"eps": extra, "acc": float(outcomes[extra].robust.float().mean())}
    return outcomes, settings


def autoattack_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps_list: list[float],
    n_classes: int,
    attacks: tuple[str, ...] = STANDARD,
    steps: int = SUITE_STEPS,
    queries: int = SUITE_QUERIES,
    seed: int = 0,
    valid_range: tuple[float, float] | None = None,
    clean_logits: torch.Tensor | None = None,
    restarts: int = 1,
    per_sample: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, float], dict]:
    """Robust accuracy under the suite for each ε: ``autoattack_<norm>_acc@ε`` (:func:`suite_robust` per sample).
    ``per_sample``, when given, receives each metric's per-sample robust mask (for :mod:`evaluation.outcomes`).

    Returns ``(metrics, settings)``.
    """
    outcomes, settings = suite_robust(
        model, x, y, norm, eps_list, n_classes, attacks, steps, queries, restarts, seed, valid_range, clean_logits
    )
    metrics = {
        metric_key(f"autoattack_{norm.lower()}_acc", eps): float(outcomes[eps].robust.float().mean())
        for eps in eps_list
    }
    if per_sample is not None:
        per_sample.update({metric_key(f"autoattack_{norm.lower()}_acc", eps): outcomes[eps].robust for eps in eps_list})
    return metrics, settings


__all__ = [
    "STANDARD",
    "SuiteOutcome",
    "autoattack_accuracy",
    "cw_margin_loss",
    "grid_shape",
    "square_layout",
    "is_standard",
    "sanity_eps",
    "skip_reason",
    "suite_robust",
]
