"""The ``ode`` family: the neural ODE of Reshniak & Webster, "Robust learning with implicit residual networks"
(eq. 11), y(0) = (x, x) → ``depth`` θ-steps of ẏ = γ₂σ(γ₁y + b₁) with h = T/depth → linear head (see
:mod:`models.ode`)."""

from __future__ import annotations

from torch import nn

from models.families.registry import register_family
from models.families.residual import solver_config
from models.network import ResidualNetwork
from models.ode import DEFAULT_HIDDEN, DEFAULT_T, AugmentedInput, ODEVectorField
from models.steps import ThetaStep


@register_family("ode")
def build_ode(s) -> ResidualNetwork:
    state = 2 * s.input_dim
    hidden = s.hidden or DEFAULT_HIDDEN
    h = (s.t_final or DEFAULT_T) / s.depth
    solver = solver_config(s.solver)
    shared = ODEVectorField(state, hidden, s.activation) if s.shared_weights else None
    steps: list[nn.Module] = [
        ThetaStep(shared if shared is not None else ODEVectorField(state, hidden, s.activation), h, s.theta, solver)
        for _ in range(s.depth)
    ]
    return ResidualNetwork(AugmentedInput(), steps, nn.Linear(state, s.output_dim))
