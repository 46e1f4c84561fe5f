"""Residual networks: input embedding → residual steps → (pooling →) linear head."""

from __future__ import annotations

import torch
from torch import nn

from models.spectral_norms import exact_spectral_norm
from models.steps import ExplicitStep, SolverStats, ThetaStep


class ResidualNetwork(nn.Module):
    """x ↦ head(pool(step_T ∘ … ∘ step_1(embed(x)))).

    The Lipschitz bound is the product of the parts' bounds (composition), each from exact spectral norms (or, for
    large convolutions, sound upper bounds). The embedding is an ``nn.Linear`` (bound ‖W‖₂) or any module with its
    own ``lipschitz_bound()`` (the augmented input (x, x) of the ``ode`` family, the convolutional lift of conv
    models); a "step" is any module with ``lipschitz_bound()`` (residual steps, and the image backbone's
    downsampling between stages); ``pool`` (image backbone: global pooling, :mod:`models.image`) is optional and
    part of the body; the head is an ``nn.Linear`` (bound ‖W‖₂) or a module with its own ``lipschitz_bound()`` (the
    image backbone's 1×1 convolution back to an image, :class:`models.image.ImageHead`).
    """

    def __init__(self, embed: nn.Module, steps: list[nn.Module], head: nn.Module, pool: nn.Module | None = None):
        super().__init__()
        self.embed = embed
        self.steps = nn.ModuleList(steps)
        self.pool = pool
        self.head = head

    def forward(self, x: torch.Tensor, return_states: bool = False):
        y = self.embed(x.flatten(1))
        states = [y]
        for step in self.steps:
            y = step(y)
            states.append(y)
        logits = self.head(y if self.pool is None else self.pool(y))
        return (logits, states) if return_states else logits

    def spectral_norm_matrices(self) -> list[torch.Tensor]:
        """The matrices whose exact norms the bounds of this module itself take (for ``batched_spectral_norms``)."""
        embed = [] if hasattr(self.embed, "lipschitz_bound") else [self.embed.weight]
        head = [] if hasattr(self.head, "lipschitz_bound") else [self.head.weight]
        return [*embed, *head]

    def body_lipschitz_bound(self) -> float:
        """Bound on Lip(x ↦ input of the head): embedding norm × the steps' bounds (× the pooling's)."""
        if hasattr(self.embed, "lipschitz_bound"):
            bound = float(self.embed.lipschitz_bound())
        else:
            bound = exact_spectral_norm(self.embed.weight)
        for step in self.steps:
            bound *= step.lipschitz_bound()
        if self.pool is not None:
            bound *= self.pool.lipschitz_bound()
        return bound

    def head_lipschitz_bound(self) -> float:
        """‖W_head‖₂ (exact): the linear head's Lipschitz constant (or the head's own bound)."""
        if hasattr(self.head, "lipschitz_bound"):
            return float(self.head.lipschitz_bound())
        return exact_spectral_norm(self.head.weight)

    def lipschitz_bound(self) -> float:
        return self.body_lipschitz_bound() * self.head_lipschitz_bound()

    def solver_stats(self) -> list[SolverStats]:
        return [step.stats for step in self.steps if isinstance(step, ThetaStep)]

    @property
    def is_implicit(self) -> bool:
        return any(isinstance(step, ThetaStep) for step in self.steps)


__all__ = ["ExplicitStep", "ResidualNetwork", "ThetaStep"]
