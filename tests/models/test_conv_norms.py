"""Convolution norms (models.conv_norms): the operator matrix against conv2d itself, the compression by a circular
convolution, Gram iteration against per-frequency SVDs, and the bound against exact norms (small operators) and
power iteration (64 channels on 32×32). Never below the norm; close to it where the image border is small."""

import itertools

import pytest
import torch
from torch.autograd.functional import jacobian

from models.conv_norms import (
    EXACT_MAX_ENTRIES,
    circular_grid,
    conv_lipschitz_bound,
    conv_norm_upper_bound,
    conv_operator_matrix,
    conv_operator_norm,
    conv_output_size,
    pixel_unshuffle_norm,
    polyphase_kernel,
)
from models.gram_iteration import circular_gram_bound


def kernel(c_out, c_in, k, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(c_out, c_in, k, k, dtype=torch.float64, generator=gen)


@pytest.mark.parametrize("k,stride,padding", [(3, 1, 1), (3, 1, 0), (3, 2, 1), (5, 2, 4), (2, 2, 0), (1, 1, 0)])
def test_operator_matrix_is_conv2d(k, stride, padding):
    side, c_in, c_out = 5, 2, 3
    w = kernel(c_out, c_in, k, k + stride)

    def conv(v):
        return torch.nn.functional.conv2d(v.reshape(1, c_in, side, side), w, stride=stride, padding=padding).flatten()

    matrix = jacobian(conv, torch.zeros(c_in * side * side, dtype=torch.float64))  # independent construction
    torch.testing.assert_close(conv_operator_matrix(w, side, stride, padding), matrix, rtol=0, atol=1e-14)


def circular_conv_matrix(w, grid, d_lo):
    """The matrix of y_i = Σ_d K_d x_{(i+d) mod N} on an N×N grid (d = a + d_lo), built from torch.roll."""
    c_in, k = w.shape[1], w.shape[-1]

    def conv(v):
        image = v.reshape(c_in, grid, grid)
        out = 0
        for a, b in itertools.product(range(k), range(k)):
            shifted = torch.roll(image, shifts=(-(a + d_lo), -(b + d_lo)), dims=(1, 2))
            out = out + torch.einsum("oc,cij->oij", w[:, :, a, b], shifted)
        return out.flatten()

    return jacobian(conv, torch.zeros(c_in * grid * grid, dtype=torch.float64))


@pytest.mark.parametrize("side,k,padding", [(4, 3, 1), (5, 3, 0), (4, 3, 2), (4, 5, 2), (6, 5, 0)])
def test_zero_padded_convolution_is_a_compression_of_the_circular_one(side, k, padding):
    """P·C·Eᵀ: the rows of the output pixels and the columns of the image pixels of the circular convolution's
    matrix on the grid of circular_grid are exactly the zero-padded convolution's matrix."""
    c_in, c_out = 2, 3
    w = kernel(c_out, c_in, k, side)
    out = conv_output_size(side, k, 1, padding)
    grid = circular_grid(side, out, -padding, k - 1 - padding)
    circ = circular_conv_matrix(w, grid, -padding).reshape(c_out, grid, grid, c_in, grid, grid)
    compressed = circ[:, :out, :out][:, :, :, :, :side, :side].reshape(c_out * out * out, c_in * side * side)
    torch.testing.assert_close(compressed, conv_operator_matrix(w, side, 1, padding), rtol=0, atol=0)
    if grid - 1 < max(side, out):
        return  # the image or the output fills the grid (padding 0: nothing ever wraps around)
    # one pixel less and a wrapped-around tap lands in the image: not a compression any more
    smaller = circular_conv_matrix(w, grid - 1, -padding).reshape(c_out, grid - 1, grid - 1, c_in, grid - 1, grid - 1)
    cut = smaller[:, :out, :out][:, :, :, :, :side, :side].reshape(c_out * out * out, c_in * side * side)
    assert not torch.equal(cut, conv_operator_matrix(w, side, 1, padding))


@pytest.mark.parametrize("c_in,c_out,k,grid", [(3, 5, 3, 9), (6, 2, 3, 12), (4, 4, 5, 11), (8, 8, 2, 7), (1, 3, 3, 9)])
def test_gram_iteration_brackets_the_circular_norm(c_in, c_out, k, grid):
    w = kernel(c_out, c_in, k, c_in * k + grid)
    blocks = torch.fft.fft2(w, s=(grid, grid)).permute(2, 3, 0, 1)  # K̂(ω) at every frequency of the grid
    exact = float(torch.linalg.matrix_norm(blocks, ord=2).amax())
    bound = circular_gram_bound(w, grid, rtol=1e-3)
    assert bound.lower <= exact * (1 + 1e-12) and exact <= bound.upper
    assert bound.upper <= exact * (1 + 1e-3) * (1 + 1e-6)  # stopped certified within rtol


@pytest.mark.parametrize("rows_per_chunk", [None, 4])
@pytest.mark.parametrize("smooth", [False, True])
def test_float32_screening_and_chunks_keep_the_maximum(monkeypatch, rows_per_chunk, smooth):
    """16 channels on a 33×33 grid: large enough for the float32 screening; in chunks of 4 frequency rows the later
    chunks are pruned with the lower bound of the earlier ones. A smooth kernel (a low-pass 1×1 part) has a sharp
    maximum, a random one many frequencies close to it."""
    import models.gram_iteration as gram_iteration

    if rows_per_chunk is not None:
        monkeypatch.setattr(gram_iteration, "_CHUNK_ENTRIES", rows_per_chunk * 2 * 17 * 16 * 16)
    w = kernel(16, 16, 3, 11) / 12
    if smooth:
        w = w / 4 + kernel(16, 16, 1, 12).expand(-1, -1, 3, 3) / 12
    blocks = torch.fft.fft2(w, s=(33, 33)).permute(2, 3, 0, 1)
    exact = float(torch.linalg.matrix_norm(blocks, ord=2).amax())
    bound = circular_gram_bound(w, 33, rtol=1e-3)
    assert bound.lower <= exact * (1 + 1e-12) and exact <= bound.upper <= exact * (1 + 1e-3) * (1 + 1e-6)


SMALL = [
    (c_in, c_out, k, side, stride, padding)
    for c_in, c_out in [(1, 1), (1, 4), (3, 2), (8, 8), (2, 7)]
    for k, side in [(1, 8), (3, 8), (3, 5), (5, 8), (5, 6)]
    for stride in (1, 2)
    for padding in sorted({k // 2, 0, k - 1})
]


def test_bound_is_never_below_the_exact_norm_on_small_operators():
    """Every seeded kernel of 1×1, 3×3 and 5×5 taps, 1–8 channels, images ≤ 8×8, strides 1 and 2, paddings 0, k//2,
    k − 1: bound ≥ exact; a 1×1 convolution's bound is its exact norm; and up to EXACT_MAX_ENTRIES (8 channels on
    8×8 at 'same' padding) the certified path uses the exact norm (within 2 %: exactly), above it the bound."""
    for seed, (c_in, c_out, k, side, stride, padding) in enumerate(SMALL):
        w = kernel(c_out, c_in, k, seed)
        exact = conv_operator_norm(w, side, stride, padding)
        bound = conv_norm_upper_bound(w, side, stride, padding)
        assert bound >= exact * (1 - 1e-12), (c_in, c_out, k, side, stride, padding)
        if k == 1:
            assert bound == pytest.approx(exact, rel=1e-12)
        small = c_out * c_in * (conv_output_size(side, k, stride, padding) * side) ** 2 <= EXACT_MAX_ENTRIES
        assert conv_lipschitz_bound(w, side, stride, padding) == (exact if small else bound)


@pytest.mark.parametrize("c_in,c_out,side", [(1, 1, 24), (1, 2, 24), (2, 1, 24), (1, 1, 32)])
def test_bound_is_within_two_percent_where_the_border_is_small(c_in, c_out, side):
    """3×3 'same' convolutions on 24×24 and 32×32: the circular convolution loses only the border, and the bound is
    within 2 % of the exact norm (on 8×8 images it can be 10 % above, on 16×16 3 %: the exact norm is kept on
    small operators)."""
    for seed in range(3):
        w = kernel(c_out, c_in, 3, 100 + seed)
        exact = conv_operator_norm(w, side)
        bound = conv_norm_upper_bound(w, side)
        assert exact * (1 - 1e-12) <= bound <= 1.02 * exact


def power_iteration_norm(w, side, stride, padding, steps=100):
    """‖conv‖ from below: 100 power steps of conv_transpose2d(conv2d(·)) on the true zero-padded convolution."""
    x = torch.randn(1, w.shape[1], side, side, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = conv_output_size(side, w.shape[-1], stride, padding)
    extra = side - ((out - 1) * stride - 2 * padding + w.shape[-1])
    for _ in range(steps):
        y = torch.nn.functional.conv2d(x, w, stride=stride, padding=padding)
        x = torch.nn.functional.conv_transpose2d(y, w, stride=stride, padding=padding, output_padding=extra)
        x = x / x.norm()
    return float(torch.nn.functional.conv2d(x, w, stride=stride, padding=padding).norm())


@pytest.mark.parametrize("c_out,stride", [(64, 1), (32, 2)])
def test_bound_at_64_channels_on_32x32_is_above_power_iteration(c_out, stride):
    w = kernel(c_out, 64, 3, stride) / 24
    assert c_out * 64 * conv_output_size(32, 3, stride) ** 2 * 32**2 > EXACT_MAX_ENTRIES  # no matrix is formed
    bound = conv_lipschitz_bound(w, 32, stride, 1)
    assert bound == conv_norm_upper_bound(w, 32, stride, 1)
    power = power_iteration_norm(w, 32, stride, 1)
    assert power <= bound <= 1.02 * power


def test_polyphase_kernel_is_the_strided_convolution():
    """A stride-s convolution = the stride-1 convolution with the polyphase kernel on the pixel-unshuffled image
    (padded to a multiple of s), offsets from d_lo."""
    w = kernel(3, 2, 3, 7)
    for side, stride, padding in [(6, 2, 1), (7, 2, 1), (9, 3, 2)]:
        x = torch.randn(1, 2, side, side, dtype=torch.float64)
        strided = torch.nn.functional.conv2d(x, w, stride=stride, padding=padding)
        phases, d_lo, d_hi = polyphase_kernel(w, stride, padding)
        padded = torch.nn.functional.pad(x, (0, -side % stride, 0, -side % stride))
        unshuffled = torch.nn.functional.pixel_unshuffle(padded, stride)  # channel c·s² + r₁·s + r₂
        out = strided.shape[-1]
        grid = torch.nn.functional.pad(unshuffled, (-d_lo, out + d_hi, -d_lo, out + d_hi))
        full = torch.nn.functional.conv2d(grid, phases)[..., :out, :out]
        torch.testing.assert_close(full, strided, rtol=1e-12, atol=1e-12)


def test_pixel_unshuffle_is_an_isometry():
    x = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    y = torch.nn.functional.pixel_unshuffle(x, 2)
    assert torch.equal(torch.sort(y.flatten(1), dim=1).values, torch.sort(x.flatten(1), dim=1).values)  # a permutation
    torch.testing.assert_close(y.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1), rtol=1e-15, atol=0)
    assert pixel_unshuffle_norm() == 1.0


def test_degenerate_kernels():
    assert conv_norm_upper_bound(torch.zeros(4, 4, 3, 3), 16) == 0.0
    w = kernel(4, 4, 3, 0)
    w[0, 0, 1, 1] = float("nan")
    assert conv_norm_upper_bound(w, 16) == float("inf")
    w = kernel(8, 8, 3, 1) * 1e150  # squares of the entries would overflow without rescaling
    assert conv_norm_upper_bound(w, 16) == pytest.approx(1e150 * conv_norm_upper_bound(w / 1e150, 16), rel=1e-12)
