"""Plug-and-play on (N, C, H, W) images: the blur is a per-channel convolution (never a matrix), its adjoint is
its transpose, its norm bound is sound, and the iteration with a 1-Lipschitz image denoiser is averaged."""

from __future__ import annotations

import torch
from torch import nn

from evaluation.pnp import ConvBlur, MatrixBlur, plug_and_play


def test_the_image_blur_is_the_matrix_blur_per_channel_and_its_adjoint_is_the_transpose() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((2, 3, 8, 8), generator=gen, dtype=torch.float64)
    v = torch.rand((2, 3, 8, 8), generator=gen, dtype=torch.float64)
    for kind in ("motion", "gaussian", "none"):
        conv, matrix = ConvBlur(kind, 3, torch.float64, x.device), MatrixBlur(kind, 8, torch.float64, x.device)
        per_channel = matrix(x.reshape(6, 64)).reshape(x.shape)
        assert torch.allclose(conv(x), per_channel, atol=1e-12)
        assert torch.allclose((conv(x) * v).sum(), (x * conv.adjoint(v)).sum(), atol=1e-12)  # ⟨Kx, v⟩ = ⟨x, Kᵀv⟩
        assert conv.norm_bound >= matrix.norm_bound - 1e-12  # Young's ‖k‖₁ ≥ the exact norm


def test_the_norm_bound_holds_on_a_non_square_colour_image() -> None:
    blur = ConvBlur("gaussian", 3, torch.float64, torch.device("cpu"))
    x = torch.randn((1, 3, 20, 30), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for _ in range(200):  # power iteration on KᵀK: a lower bound of ‖K‖₂²
        x = blur.adjoint(blur(x))
        x = x / x.norm()
    estimate = blur(x).norm().item()
    assert estimate <= blur.norm_bound + 1e-12 and estimate > 0.9 * blur.norm_bound


class ChannelMixing(nn.Module):
    """A 1-Lipschitz image denoiser for the test: a 1×1 convolution with an orthogonal channel matrix, halved and
    averaged with a 3×3 box blur (norm ≤ ½ + ½)."""

    def __init__(self) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(2)))
        self.register_buffer("mix", q.reshape(3, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        box = nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=True)
        return 0.5 * nn.functional.conv2d(x, self.mix) + 0.5 * box

    def lipschitz_bound(self) -> float:
        return 1.0


def test_plug_and_play_on_colour_images_is_averaged_monotone_and_reproducible() -> None:
    clean = torch.rand((3, 3, 12, 16), generator=torch.Generator().manual_seed(3))
    model = ChannelMixing()
    metrics, info = plug_and_play(model, clean, [0.0, 0.05], iterations=20, blur="motion", batch_size=2)
    assert info["averaged"] and info["operator_norm"] == 1.0 and info["step_size"] == 1.0
    assert metrics["pnp_monotone@0"] == 1.0 and metrics["pnp_monotone@0.05"] == 1.0
    assert metrics["pnp_input_psnr@0"] > metrics["pnp_input_psnr@0.05"]
    again, _ = plug_and_play(model, clean, [0.0, 0.05], iterations=20, blur="motion", batch_size=3)
    assert again == metrics  # batch-independent
