"""Build a network from a model spec (``core.spec.ModelSpec``, read by attribute)."""

from __future__ import annotations

from torch import nn

from models.conv import ConvEmbedding, ConvResidualFunction
from models.hamiltonian import SymplecticEulerStep
from models.lipschitz_layers import ConvGradientFlowLayer, GradientFlowLayer, normalized_linear, square_image_side
from models.network import ResidualNetwork
from models.ode import DEFAULT_HIDDEN, DEFAULT_T, AugmentedInput, ODEVectorField
from models.residual import ResidualFunction
from models.steps import ExplicitStep, SolverConfig, ThetaStep


def build_model(model_spec) -> nn.Module:
    """Build the network a model spec describes.

    Args:
        model_spec: an ``core.spec.ModelSpec`` with ``input_dim`` and ``output_dim`` set (the runner fills
            them from the dataset).
    Returns:
        an ``nn.Module`` mapping inputs (N, input_dim…) to logits (N, output_dim).
    Raises:
        ValueError: dimensions missing or an unknown family.
    """
    s = model_spec
    if s.input_dim is None or s.output_dim is None:
        raise ValueError("model spec needs input_dim and output_dim (filled from the dataset by the runner)")
    if s.family == "hamiltonian":
        return _hamiltonian(s)
    if s.family == "lipschitz":
        return _lipschitz(s)
    if s.family == "ode":
        return _ode(s)
    if s.family not in ("explicit", "implicit"):
        raise ValueError(f"unknown model family {s.family!r}")
    if getattr(s, "conv", False):
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
    solver = _solver_config(s.solver)
    steps: list[nn.Module] = []
    for _ in range(s.depth):
        f = shared if shared is not None else residual()
        if s.family == "explicit":
            steps.append(ExplicitStep(f, s.h))
        else:
            steps.append(ThetaStep(f, s.h, s.theta, solver))
    if embed is None:
        embed = nn.Linear(s.input_dim, s.width)
    return ResidualNetwork(embed, steps, nn.Linear(state, s.output_dim))


def _solver_config(cfg) -> SolverConfig:
    return SolverConfig(
        forward=cfg.forward,
        backward=cfg.backward,
        tol=cfg.tol,
        max_iter=cfg.max_iter,
        backward_tol=cfg.backward_tol or cfg.tol,
        backward_max_iter=cfg.backward_max_iter or cfg.max_iter,
    )


def _ode(s) -> ResidualNetwork:
    """The neural ODE of seed 002 (eq. 11): y(0) = (x, x) → ``depth`` θ-steps of ẏ = γ₂σ(γ₁y + b₁) with
    h = T/depth → linear head (see :mod:`models.ode`)."""
    state = 2 * s.input_dim
    hidden = s.hidden or DEFAULT_HIDDEN
    t_final = getattr(s, "t_final", None) or DEFAULT_T
    h = t_final / s.depth
    solver = _solver_config(s.solver)
    shared = ODEVectorField(state, hidden, s.activation) if s.shared_weights else None
    steps: list[nn.Module] = [
        ThetaStep(shared if shared is not None else ODEVectorField(state, hidden, s.activation), h, s.theta, solver)
        for _ in range(s.depth)
    ]
    return ResidualNetwork(AugmentedInput(), steps, nn.Linear(state, s.output_dim))


def _repeat(make, depth: int, shared: bool) -> list[nn.Module]:
    if shared:
        step = make()
        return [step] * depth
    return [make() for _ in range(depth)]


def _hamiltonian(s) -> ResidualNetwork:
    """Linear embedding to (q, p) → ``depth`` symplectic Euler steps (seed 003) → linear head."""
    hidden = s.hidden or s.width
    steps = _repeat(lambda: SymplecticEulerStep(s.width, hidden, s.h, s.activation), s.depth, s.shared_weights)
    return ResidualNetwork(nn.Linear(s.input_dim, s.width), steps, nn.Linear(s.width, s.output_dim))


def _lipschitz(s) -> ResidualNetwork:
    """Spectrally normalised embedding → ``depth`` 1-Lipschitz gradient-flow layers (seed 003) → spectrally
    normalised head: Lipschitz bound 1 (up to rounding)."""
    if s.conv:
        side = square_image_side(s.input_dim)
        hidden = s.hidden or s.channels
        state = s.channels * side * side

        def make() -> nn.Module:
            return ConvGradientFlowLayer(s.channels, hidden, side, s.kernel_size, s.activation)
    else:
        hidden = s.hidden or s.width
        state = s.width

        def make() -> nn.Module:
            return GradientFlowLayer(s.width, hidden, s.activation)

    steps = _repeat(make, s.depth, s.shared_weights)
    return ResidualNetwork(normalized_linear(s.input_dim, state), steps, normalized_linear(state, s.output_dim))
