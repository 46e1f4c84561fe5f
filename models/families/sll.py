"""The ``sll`` family: spectrally normalised embedding → ``depth`` SDP-based Lipschitz layers
x − 2WᵀT⁻¹σ(Wx + b) (Araujo, Havens, Delattre, Allauzen & Hu, "A Unified Algebraic Perspective on Lipschitz Neural
Networks", ICLR 2023) → spectrally normalised head: Lipschitz bound 1 (up to rounding), like ``lipschitz`` but
with a learned diagonal step instead of one scalar τ ≤ 2/‖W‖² per layer (:mod:`models.sll`)."""

from __future__ import annotations

from torch import nn

from models.families.registry import register_family, repeat_steps
from models.lipschitz_layers import normalized_linear
from models.network import ResidualNetwork
from models.sll import SDPLipschitzLayer


@register_family("sll")
def build_sll(s) -> ResidualNetwork:
    hidden = s.hidden or s.width

    def make() -> nn.Module:
        return SDPLipschitzLayer(s.width, hidden, s.activation)

    steps = repeat_steps(make, s.depth, s.shared_weights)
    return ResidualNetwork(normalized_linear(s.input_dim, s.width), steps, normalized_linear(s.width, s.output_dim))
