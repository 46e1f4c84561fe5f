"""The ``lipschitz`` family: spectrally normalised embedding → ``depth`` 1-Lipschitz gradient-flow layers
x − τWᵀσ(Wx + b) (Murari, "Neural Networks as Dynamical Systems: Hamiltonian and 1-Lipschitz Networks"; dense or
convolutional) → spectrally normalised head: Lipschitz bound 1 (up to rounding). With ``conv`` and ``stages``, the
image backbone (:mod:`models.families.image`) with a lift, 1×1 convolutions, pooling and head of norm 1: bound
1/min s_c, that of the per-channel normalisation."""

from __future__ import annotations

from torch import nn

from models.families.image import image_network
from models.families.registry import register_family, repeat_steps
from models.image import StageGradientFlowLayer
from models.lipschitz_layers import ConvGradientFlowLayer, GradientFlowLayer, normalized_linear, square_image_side
from models.network import ResidualNetwork


@register_family("lipschitz")
def build_lipschitz(s) -> ResidualNetwork:
    if s.conv and getattr(s, "stages", None):
        return image_network(
            s,
            lambda c, hidden, size: StageGradientFlowLayer(c, hidden, size, s.kernel_size, s.activation),
            normalized=True,
        )
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

    steps = repeat_steps(make, s.depth, s.shared_weights)
    return ResidualNetwork(normalized_linear(s.input_dim, state), steps, normalized_linear(state, s.output_dim))
