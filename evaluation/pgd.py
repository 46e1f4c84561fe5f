"""PGD accuracy through torchattacks, with one adapter for its pitfalls.

torchattacks assumes images: it clamps every iterate to [0, 1] and PGDL2 reshapes norms to (N, 1, 1, 1). The
:class:`AttackBox` adapter maps data into a [0, 1]⁴ᴰ box and back with one *uniform* affine map
x = low + scale·u, so L∞ and L2 distances scale by the same factor (ε_box = ε/scale) and the box clamp never binds
for data without a declared valid range (the box is padded by ε on every side). Data that declares a range (images)
is attacked inside that range, as it should be.

Regression and denoising (:func:`pgd_regression`): torchattacks' PGD and PGDL2 maximise
``nn.CrossEntropyLoss()(get_logits(x_adv), labels)``, with the loss built inline. Rather than copying their loops,
:class:`SquaredErrorLogits` hands them a model whose two "logits" are (0, N·e(x)), with e(x) = ‖f(x) − t‖² the
sample's squared error against its target t, and the label 0 for every sample. Then the per-sample cross-entropy is
softplus(N·e(x)), strictly increasing in e, and its gradient is sigmoid(N·e)·∇e (the N cancels the batch mean) with
sigmoid(·) ∈ [½, 1): the same sign (L∞ step) and the same direction (L2 step, normalised per sample) as the
gradient of e itself. So torchattacks runs, unchanged, a PGD ascent on each sample's squared error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torchattacks
from torch import nn

from core.metrics import metric_key
from evaluation.batching import EVAL_BATCH, batch_slices

#: this evaluation's protocol revision: bump it when a change alters its numbers on purpose (core/protocol.py)
# revision 2: the model stays in eval mode after an attack (torchattacks left it in training mode, so the scoring
# forward and every later evaluation ran a spectrally normalised model with power-iteration updates)
PROTOCOL_REVISION = 2

ATTACKS = {"Linf": torchattacks.PGD, "L2": torchattacks.PGDL2}


class AttackBox(nn.Module):
    """u ∈ [0,1]^(N,1,1,D) ↦ model(low + scale·u reshaped to the data's shape)."""

    def __init__(self, model: nn.Module, low: float, scale: float, sample_shape: torch.Size):
        super().__init__()
        self.model = model
        self.low = low
        self.scale = scale
        self.sample_shape = tuple(sample_shape)
        self.identity = low == 0.0 and scale == 1.0  # data already in [0, 1] (images): reshape only

    def to_box(self, x: torch.Tensor) -> torch.Tensor:
        u = x if self.identity else (x - self.low) / self.scale
        return u.reshape(len(x), 1, 1, -1)

    def from_box(self, u: torch.Tensor) -> torch.Tensor:
        x = u if self.identity else self.low + self.scale * u  # two kernels per step, forward and backward
        return x.reshape(len(u), *self.sample_shape)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.model(self.from_box(u))


def attack_box(model: nn.Module, x: torch.Tensor, max_eps: float, valid_range: tuple[float, float] | None) -> AttackBox:
    if valid_range is not None:
        low, high = valid_range
    else:
        pad = max_eps + 1e-3 * float(x.max() - x.min() + 1)
        low, high = float(x.min()) - pad, float(x.max()) + pad
    # in eval mode: torchattacks puts the model back into the mode it found the attacked module in, so a box in
    # (nn.Module's default) training mode left the model training after every attack
    return AttackBox(model, low, high - low, x.shape[1:]).eval()


def correct_when_clean(
    box: AttackBox, u: torch.Tensor, y: torch.Tensor, clean_logits: torch.Tensor | None
) -> torch.Tensor:
    """Where the clean samples are classified correctly: from ``clean_logits`` (the evaluation's clean pass, so a
    robust accuracy can never exceed the clean accuracy computed from the same logits) or, without them, from one
    forward through the box."""
    if clean_logits is None:
        with torch.no_grad():
            clean_logits = box(u)
    elif clean_logits.shape[0] != len(y):
        raise ValueError(f"clean_logits has {clean_logits.shape[0]} rows for {len(y)} samples")
    return clean_logits.argmax(1) == y


def pgd_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps_list: list[float],
    steps: int,
    restarts: int,
    step_size: float | None = None,
    seed: int = 0,
    valid_range: tuple[float, float] | None = None,
    clean_logits: torch.Tensor | None = None,
    per_sample: dict[str, torch.Tensor] | None = None,
    batch_size: int | None = None,
) -> tuple[dict[str, float], dict]:
    """Robust accuracy under PGD for each ε: a sample counts only if it is classified correctly clean *and* under
    every restart (worst case over restarts per sample). Step size defaults to 2.5·ε/steps (Madry et al., 2018).
    ``clean_logits``: the eval-mode model's logits on ``x`` when already computed (:func:`correct_when_clean`).
    ``per_sample``, when given, receives each metric's per-sample robust mask (for :mod:`evaluation.outcomes`).

    Returns ``({pgd_<norm>_acc@ε: …}, settings)``; :func:`pgd_robust` gives the per-sample outcomes.
    """
    robust, settings = pgd_robust(model, x, y, norm, eps_list, steps, restarts, step_size, seed, valid_range,
                                  clean_logits, batch_size)  # fmt: skip
    metrics = {metric_key(f"pgd_{norm.lower()}_acc", eps): float(robust[eps].float().mean()) for eps in eps_list}
    if per_sample is not None:
        per_sample.update({metric_key(f"pgd_{norm.lower()}_acc", eps): robust[eps] for eps in eps_list})
    return metrics, settings


def pgd_robust(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps_list: list[float],
    steps: int,
    restarts: int,
    step_size: float | None = None,
    seed: int = 0,
    valid_range: tuple[float, float] | None = None,
    clean_logits: torch.Tensor | None = None,
    batch_size: int | None = None,
) -> tuple[dict[float, torch.Tensor], dict]:
    """:func:`pgd_accuracy` per sample: ``({ε: bool mask of the samples PGD failed on (and clean-correct)},
    settings)``, attacking ``batch_size`` samples at a time."""
    model.eval()
    box = attack_box(model, x, max(eps_list), valid_range)
    u = box.to_box(x)
    clean_correct = correct_when_clean(box, u, y, clean_logits)
    masks, per_eps = {}, {}
    for eps in eps_list:
        alpha = step_size if step_size is not None else 2.5 * eps / steps
        robust = clean_correct.clone()
        for part, adv in _restarts(lambda _part: box, box, norm, eps, alpha, steps, restarts, seed, u, y, batch_size):
            with torch.no_grad():
                robust[part] &= box(adv).argmax(1) == y[part]
        masks[eps] = robust
        per_eps[f"{eps:g}"] = {"step_size": alpha}
    return masks, _settings(norm, steps, restarts, seed, per_eps, box, batch_size=batch_size or EVAL_BATCH)


def _restarts(
    target_of: Callable[[slice], nn.Module], box: AttackBox, norm: str, eps: float, alpha: float, steps: int,
    restarts: int, seed: int, u: torch.Tensor, labels: torch.Tensor, batch_size: int | None = None,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """``(batch, adversarial inputs)`` (in the box's coordinates) of ``restarts`` random-start PGD runs of
    torchattacks on ``target_of(batch)`` at ε (input units), batch by batch (:func:`evaluation.batching.batch_slices`);
    the random starts come from one stream seeded with ``seed``, batch-major (the caller's RNG is left as it was):
    with one batch, the draws of an unbatched run."""
    with torch.random.fork_rng(devices=[u.device] if u.device.type == "cuda" else []):
        torch.manual_seed(seed)
        for part in batch_slices(len(u), batch_size):
            target = target_of(part)
            attack = ATTACKS[norm](target, eps=eps / box.scale, alpha=alpha / box.scale, steps=steps, random_start=True)
            for _ in range(restarts):
                yield part, attack(u[part], labels[part])


def _settings(norm: str, steps: int, restarts: int, seed: int, per_eps: dict, box: AttackBox, **extra) -> dict:
    """The attack settings stored with the metrics (result.json ``info.pgd``)."""
    return {
        "library": f"torchattacks {torchattacks.__version__}",
        "attack": ATTACKS[norm].__name__,
        **extra,
        "norm": norm,
        "steps": steps,
        "restarts": restarts,
        "random_start": True,
        "seed": seed,
        "eps": per_eps,
        "box": {"low": box.low, "scale": box.scale},
    }


class SquaredErrorLogits(nn.Module):
    """Two "logits" (0, N·‖f(x) − t‖²) per sample, so that torchattacks' cross-entropy with label 0 is
    softplus(N·squared error), a per-sample increasing function of the error (module docstring).

    The targets ``t`` are bound to the batch being attacked: the model must be called on that whole batch, in
    order (as PGD and PGDL2 do).
    """

    def __init__(self, box: AttackBox, targets: torch.Tensor):
        super().__init__()
        self.box = box
        self.targets = targets

    def squared_error(self, u: torch.Tensor) -> torch.Tensor:
        out = self.box(u)
        if len(out) != len(self.targets):
            raise ValueError(f"attacked batch of {len(out)} rows, but {len(self.targets)} targets are bound")
        return (out - self.targets.reshape(out.shape)).pow(2).flatten(1).sum(dim=1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        error = self.squared_error(u)
        return torch.stack([torch.zeros_like(error), len(error) * error], dim=1)


def pgd_regression(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps_list: list[float],
    steps: int,
    restarts: int,
    step_size: float | None = None,
    seed: int = 0,
    valid_range: tuple[float, float] | None = None,
    batch_size: int | None = None,
) -> tuple[dict[str, float], dict]:
    """Worst-case MSE within ε under PGD (torchattacks PGD / PGDL2 through :class:`SquaredErrorLogits`): for each
    sample the largest squared error found over the restarts *and* the unperturbed input (δ = 0 is in the ball, as a
    clean misclassification counts against PGD accuracy), then the mean over samples and output entries. A lower
    bound on the true worst case; never below the clean MSE. Step size defaults to 2.5·ε/steps.

    Returns ``({pgd_<norm>_mse@ε: …}, settings)``; settings also record the attack-only MSE (without the δ = 0
    candidate) per ε.
    """
    model.eval()
    box = attack_box(model, x, max(eps_list), valid_range)
    u = box.to_box(x)
    objectives = {(p.start, p.stop): SquaredErrorLogits(box, y[p]).eval() for p in batch_slices(len(x), batch_size)}
    labels = torch.zeros(len(x), dtype=torch.long, device=x.device)
    with torch.no_grad():
        clean_error = torch.cat([o.squared_error(u[start:stop]) for (start, stop), o in objectives.items()])
    entries = y[0].numel()
    metrics, per_eps = {}, {}
    for eps in eps_list:
        alpha = step_size if step_size is not None else 2.5 * eps / steps
        attacked = torch.zeros_like(clean_error)
        for part, adv in _restarts(
            lambda p: objectives[p.start, p.stop], box, norm, eps, alpha, steps, restarts, seed, u, labels, batch_size
        ):
            with torch.no_grad():
                error = objectives[part.start, part.stop].squared_error(adv)
                attacked[part] = torch.maximum(attacked[part], error)
        worst = torch.maximum(attacked, clean_error)
        metrics[metric_key(f"pgd_{norm.lower()}_mse", eps)] = float(worst.double().mean()) / entries
        per_eps[f"{eps:g}"] = {"step_size": alpha, "attack_only_mse": float(attacked.double().mean()) / entries}
    objective_note = "per-sample squared error via SquaredErrorLogits (cross-entropy = softplus(N·error))"
    return metrics, _settings(
        norm, steps, restarts, seed, per_eps, box, objective=objective_note, batch_size=batch_size or EVAL_BATCH
    )
