"""Sound upper bounds on the L2 Lipschitz constant of a model's input → logits map."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from models.spectral_norms import batched_spectral_norms, shared_derived_matrices
from models.steps import LipschitzBoundUnavailable


def lipschitz_bound(model: nn.Module) -> float:
    """A sound upper bound on Lip₂(model), computed from exact spectral norms (never power iteration alone).

    Composition: Lip(g∘f) ≤ Lip(g)·Lip(f); explicit step 1 + h·Lip F; θ-step (1+(1−θ)hℓ)/(1−θhℓ).

    Raises:
        LipschitzBoundUnavailable: the model has no bound of the supported forms (e.g. θhℓ ≥ 1).
    """
    return lipschitz_bounds(model)[0]


def lipschitz_bounds(model: nn.Module) -> tuple[float, float | None]:
    """``(bound on Lip₂(model), bound on Lip₂(body))``: the second is that of the map into a linear head (``None``
    for a model without ``body_lipschitz_bound``), used by the pairwise-margin certificate. Each layer's exact norm
    is computed once: the whole-model bound is the body's times ‖W_head‖₂ where the model splits that way.

    Raises:
        LipschitzBoundUnavailable: as :func:`lipschitz_bound`.
    """
    if not hasattr(model, "lipschitz_bound"):
        raise LipschitzBoundUnavailable(f"{type(model).__name__} does not provide a Lipschitz bound")
    was_training = model.training
    # exact norms need eval mode everywhere; switching modes walks the module tree (set-attributes on every
    # module: more than the bounds of a small model cost), so only when some module is training
    modules = list(model.modules())  # one walk of the tree for the mode check and the matrices
    switch = any(m.training for m in modules)
    if switch:
        model.eval()
    try:
        # each parametrised weight (parametrize.cached) and each matrix built from weights, such as diag(√|s|)·W
        # (shared_derived_matrices), computed once: the same tensor for the batch and for the bounds, whose exact
        # norms come from one batched eigensolver call per Gram size; no_grad: W/‖W‖ exactly as a bound called on
        # its own computes it
        with torch.no_grad(), parametrize.cached(), shared_derived_matrices():
            # looked up on the class: hasattr on a module raises and catches an AttributeError for each miss
            matrices = [m for module in modules if getattr(type(module), "spectral_norm_matrices", None)
                        for m in module.spectral_norm_matrices()]  # fmt: skip
            with batched_spectral_norms(matrices):
                body = float(model.body_lipschitz_bound()) if hasattr(model, "body_lipschitz_bound") else None
                if body is not None and hasattr(model, "head_lipschitz_bound"):
                    bound = body * float(model.head_lipschitz_bound())
                else:
                    bound = float(model.lipschitz_bound())
    finally:
        if switch:
            model.train(was_training)
    if not math.isfinite(bound):
        raise LipschitzBoundUnavailable(f"Lipschitz bound is not finite ({bound})")
    return bound, body
