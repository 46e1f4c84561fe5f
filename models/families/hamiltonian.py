"""The ``hamiltonian`` family: linear embedding to (q, p) → ``depth`` symplectic Euler steps (Murari, "Neural
Networks as Dynamical Systems: Hamiltonian and 1-Lipschitz Networks") → linear head."""

from __future__ import annotations

from torch import nn

from models.families.registry import register_family, repeat_steps
from models.hamiltonian import SymplecticEulerStep
from models.network import ResidualNetwork


@register_family("hamiltonian")
def build_hamiltonian(s) -> ResidualNetwork:
    hidden = s.hidden or s.width
    steps = repeat_steps(lambda: SymplecticEulerStep(s.width, hidden, s.h, s.activation), s.depth, s.shared_weights)
    return ResidualNetwork(nn.Linear(s.input_dim, s.width), steps, nn.Linear(s.width, s.output_dim))
