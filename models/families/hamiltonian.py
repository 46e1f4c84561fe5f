"""The ``hamiltonian`` family: linear embedding to (q, p) → ``depth`` symplectic Euler steps (Murari, "Neural
Networks as Dynamical Systems: Hamiltonian and 1-Lipschitz Networks") → linear head. With ``conv`` and ``stages``,
the image backbone (:mod:`models.families.image`) whose state's channels split into q (first half) and p, with
convolutional potentials ∇K(p) = conv_transpose2d(u ⊙ σ(conv2d(p, A) + a), A)
(:class:`models.hamiltonian.ConvGradientPotential`)."""

from __future__ import annotations

from torch import nn

from models.families.image import image_network
from models.families.registry import register_family, repeat_steps
from models.hamiltonian import ConvGradientPotential, SymplecticEulerStep
from models.network import ResidualNetwork


@register_family("hamiltonian")
def build_hamiltonian(s) -> ResidualNetwork:
    if s.conv:
        return image_network(s, lambda c, hidden, size: conv_symplectic_step(s, c, hidden, size))
    hidden = s.hidden or s.width
    steps = repeat_steps(lambda: SymplecticEulerStep(s.width, hidden, s.h, s.activation), s.depth, s.shared_weights)
    return ResidualNetwork(nn.Linear(s.input_dim, s.width), steps, nn.Linear(s.width, s.output_dim))


def conv_symplectic_step(s, channels: int, hidden: int, size: tuple[int, int]) -> SymplecticEulerStep:
    """p ← p − h∇U(q), q ← q + h∇K(p) on a channels×H×W state, q and p its two halves of channels."""
    if channels % 2:
        raise ValueError(f"a Hamiltonian state splits its channels into (q, p): channels must be even, got {channels}")
    half = channels // 2
    potential = ConvGradientPotential(half, hidden, size, s.kernel_size, s.activation)
    kinetic = ConvGradientPotential(half, hidden, size, s.kernel_size, s.activation)
    return SymplecticEulerStep(channels * size[0] * size[1], hidden, s.h, s.activation, kinetic, potential)
