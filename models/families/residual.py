"""Residual families: ``explicit`` (y = x + h·F(x), explicit Euler, a ResNet; Reshniak & Webster, "Robust learning
with implicit residual networks", eq. 2–3) and ``implicit`` (the θ-method y = x + h[(1−θ)F(x) + θF(y)], eq. 7),
with a dense F (spectrally placed eigenvalues when ``spectral`` is given) or a convolutional F (``conv``; with
``stages``, the image backbone of :mod:`models.families.image`)."""

from __future__ import annotations

from torch import nn

from models.conv import ConvEmbedding, ConvResidualFunction
from models.families.image import image_network
from models.families.registry import register_family
from models.lipschitz_layers import square_image_side
from models.network import ResidualNetwork
from models.residual import ResidualFunction
from models.steps import ExplicitStep, SolverConfig, ThetaStep


def solver_config(cfg) -> SolverConfig:
    """The θ-steps' solver settings from a spec's ``solver`` (backward tolerance and iterations default to the
    forward ones)."""
    return SolverConfig(
        forward=cfg.forward,
        backward=cfg.backward,
        tol=cfg.tol,
        max_iter=cfg.max_iter,
        backward_tol=cfg.backward_tol or cfg.tol,
        backward_max_iter=cfg.backward_max_iter or cfg.max_iter,
    )


def _residual_network(s, step) -> ResidualNetwork:
    """Embedding → ``depth`` residual steps ``step(F)`` → linear head, dense or convolutional (or the image
    backbone's stages of convolutional steps)."""
    if s.conv and getattr(s, "stages", None):
        return image_network(
            s, lambda c, hidden, size: step(ConvResidualFunction(c, hidden, size, s.kernel_size, s.activation))
        )
    if s.conv:
        side = square_image_side(s.input_dim)
        state = s.channels * side * side
        embed: nn.Module | None = ConvEmbedding(s.channels, side, s.kernel_size)

        def residual() -> nn.Module:
            return ConvResidualFunction(s.channels, s.hidden or s.channels, side, s.kernel_size, s.activation)
    else:
        hidden = s.hidden or s.width
        spectral = (s.spectral.lower, s.spectral.upper) if s.spectral is not None else None
        state = s.width
        embed = None  # created after the steps, as always: the same seed gives the same initial weights

        def residual() -> nn.Module:
            return ResidualFunction(s.width, hidden, s.activation, spectral)

    shared = residual() if s.shared_weights else None
    steps = [step(shared if shared is not None else residual()) for _ in range(s.depth)]
    if embed is None:
        embed = nn.Linear(s.input_dim, s.width)
    return ResidualNetwork(embed, steps, nn.Linear(state, s.output_dim))


@register_family("explicit")
def build_explicit(s) -> ResidualNetwork:
    return _residual_network(s, lambda f: ExplicitStep(f, s.h))


@register_family("implicit")
def build_implicit(s) -> ResidualNetwork:
    solver = solver_config(s.solver)
    return _residual_network(s, lambda f: ThetaStep(f, s.h, s.theta, solver))
