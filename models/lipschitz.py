"""Sound upper bounds on the L2 Lipschitz constant of a model's input → logits map."""

from __future__ import annotations

import math

from torch import nn

from models.steps import LipschitzBoundUnavailable


def lipschitz_bound(model: nn.Module) -> float:
    """A sound upper bound on Lip₂(model), computed from exact spectral norms (never power iteration alone).

    Composition: Lip(g∘f) ≤ Lip(g)·Lip(f); explicit step 1 + h·Lip F; θ-step (1+(1−θ)hℓ)/(1−θhℓ).

    Raises:
        LipschitzBoundUnavailable: the model has no bound of the supported forms (e.g. θhℓ ≥ 1).
    """
    if not hasattr(model, "lipschitz_bound"):
        raise LipschitzBoundUnavailable(f"{type(model).__name__} does not provide a Lipschitz bound")
    was_training = model.training
    model.eval()
    try:
        bound = float(model.lipschitz_bound())
    finally:
        model.train(was_training)
    if not math.isfinite(bound):
        raise LipschitzBoundUnavailable(f"Lipschitz bound is not finite ({bound})")
    return bound
