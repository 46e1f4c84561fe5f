"""PGD accuracy through torchattacks, with one adapter for its pitfalls.

torchattacks assumes images: it clamps every iterate to [0, 1] and PGDL2 reshapes norms to (N, 1, 1, 1). The
:class:`AttackBox` adapter maps data into a [0, 1]⁴ᴰ box and back with one *uniform* affine map
x = low + scale·u, so L∞ and L2 distances scale by the same factor (ε_box = ε/scale) and the box clamp never binds
for data without a declared valid range (the box is padded by ε on every side). Data that declares a range (images)
is attacked inside that range, as it should be.
"""

from __future__ import annotations

import torch
import torchattacks
from torch import nn

from evaluation.spec import metric_key

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
    return AttackBox(model, low, high - low, x.shape[1:])


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
) -> tuple[dict[str, float], dict]:
    """Robust accuracy under PGD for each ε: a sample counts only if it is classified correctly clean *and* under
    every restart (worst case over restarts per sample). Step size defaults to 2.5·ε/steps (Madry et al., 2018).

    Returns ``({pgd_<norm>_acc@ε: …}, settings)``.
    """
    model.eval()
    box = attack_box(model, x, max(eps_list), valid_range)
    u = box.to_box(x)
    with torch.no_grad():
        clean_correct = box(u).argmax(1) == y
    metrics, per_eps = {}, {}
    for eps in eps_list:
        alpha = step_size if step_size is not None else 2.5 * eps / steps
        attack = ATTACKS[norm](box, eps=eps / box.scale, alpha=alpha / box.scale, steps=steps, random_start=True)
        robust = clean_correct.clone()
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            torch.manual_seed(seed)
            for _ in range(restarts):
                adv = attack(u, y)
                with torch.no_grad():
                    robust &= box(adv).argmax(1) == y
        metrics[metric_key(f"pgd_{norm.lower()}_acc", eps)] = float(robust.float().mean())
        per_eps[f"{eps:g}"] = {"step_size": alpha}
    settings = {
        "library": f"torchattacks {torchattacks.__version__}",
        "attack": ATTACKS[norm].__name__,
        "norm": norm,
        "steps": steps,
        "restarts": restarts,
        "random_start": True,
        "seed": seed,
        "eps": per_eps,
        "box": {"low": box.low, "scale": box.scale},
    }
    return metrics, settings
