"""Operator norms of 2-D convolutions: exact where the operator is small, a provable upper bound above that.

A convolution with kernel K (C'×C×k×k), zero padding p and stride s acts on C×n×n images as a linear operator.

* **Small operators** (at most :data:`EXACT_MAX_ENTRIES` matrix entries: 8 channels on 8×8 images, a 512×512
  matrix, about 26 ms on one CPU core): the exact norm, the largest singular value of the operator's matrix
  (:func:`conv_operator_matrix`, float64; :mod:`models.spectral_norms`).
* **Above that** (:func:`conv_norm_upper_bound`): Gram iteration on the circular convolution that contains the
  operator, which never forms the matrix (Delattre, Barthélemy, Araujo & Allauzen, "Efficient Bound of Lipschitz
  Constant for Convolutional Layers by Gram Iteration", ICML 2023: Gram iteration per frequency of the circular
  convolution, with rescaling). Three facts make it an upper bound of the zero-padded operator:

  1. *The zero-padded convolution is a compression of a circular one* (:func:`circular_grid`). On a grid of N ≥ n + p
     pixels per side, with the image in the corner and zeros elsewhere, the circular convolution reads, for every
     output pixel the zero-padded one computes, the same input pixels: an index that falls into the padding wraps
     around to a grid pixel outside the image, which holds 0. So the operator is P·C·Eᵀ, E embedding the image into
     the grid and P selecting the output pixels, both with orthonormal rows, and ‖P·C·Eᵀ‖₂ ≤ ‖C‖₂.
  2. *The circular convolution is block-diagonalised by the 2-D DFT* (Sedghi, Gupta & Long, "The Singular Values of
     Convolutional Layers", ICLR 2019): ‖C‖₂ = max over the N² frequencies ω of ‖K̂(ω)‖₂, K̂(ω) = Σ_a K_a e^{−i⟨ω,a⟩}
     a C'×C matrix (for a real kernel, ω and −ω give conjugate matrices: half the grid suffices).
  3. *Gram iteration bounds each ‖K̂(ω)‖₂ from above* (Delattre et al.): with A = K̂ᴴK̂ (eigenvalues
     λᵢ = σᵢ²) and G_t = A^{2^(t−1)}, ‖K̂‖₂ ≤ ‖G_t‖_F^{1/2^t} = (Σᵢ σᵢ^{2^(t+1)})^{1/2^(t+1)}, which tends to σ₁ as t
     grows (the excess factor is at most rank^{1/2^(t+1)}, and much less when σ₂ < σ₁).

  :mod:`models.gram_iteration` forms A(ω) from the kernel's autocorrelation, squares per frequency (float32
  screening, then float64), drops frequencies that a lower bound proves cannot hold the maximum, and stops when the
  bound is certified within 0.1 % of the circular norm; a rounding margin (about 1 + 1e-10 at 64 channels) covers
  float rounding.

  The bound is that of the circular convolution, not of the zero-padded one: on small images it is looser (on 8×8
  images up to 10 % above the exact norm with 3×3 kernels and 35 % with 5×5 ones, which is why the exact norm is
  kept there), on larger ones it closes in, the compression losing only the border (3×3 kernels: up to 3 % on
  16×16, 1.3 % on 24×24 and 32×32; benchmarks/bench_conv_bound.py).
* **Strides** (:func:`polyphase_kernel`): a stride-s convolution is a stride-1 convolution of the s² polyphase
  components of the image (the pixels (s·i + r₁, s·j + r₂) for each residue r), with a kernel of ⌈k/s⌉ taps per side
  and C·s² input channels. Splitting the image into its components is a permutation of the pixels (an isometry,
  like pixel-unshuffle: :func:`pixel_unshuffle_norm`), so the two operators have the same norm (the image first
  padded with zeros to a multiple of s, which can only raise it), and the bound above applies to the stride-1 one.
  (Also simply ‖strided‖ ≤ ‖stride 1‖, striding being a coordinate projection; the polyphase form is tighter: a
  2×2 stride-2 "patchify" convolution is a 1×1 convolution, whose bound is exact.)

Power iteration alone is never used for a bound: it approaches the norm from below. Example::

    conv_lipschitz_bound(kernel, side=32)                        # exact if small, else the Gram-iteration bound
    conv_lipschitz_bound(kernel, side=32, stride=2, padding=1)   # a downsampling convolution
"""

from __future__ import annotations

import math

import torch

from models.gram_iteration import GRAM_RTOL, circular_gram_bound
from models.spectral_norms import exact_spectral_norm

#: Operators with at most this many matrix entries (2 MiB in float64; the smaller Gram matrix is then at most
#: 512×512) get their exact norm; larger ones the Gram-iteration bound.
EXACT_MAX_ENTRIES = 2**18


def conv_output_size(side: int, kernel_size: int, stride: int = 1, padding: int | None = None) -> int:
    """Output side of conv2d on n×n images (``padding`` None: k//2, 'same' for odd k at stride 1)."""
    pad = kernel_size // 2 if padding is None else padding
    return (side + 2 * pad - kernel_size) // stride + 1


def conv_operator_matrix(kernel: torch.Tensor, side: int, stride: int = 1, padding: int | None = None) -> torch.Tensor:
    """The (C'·m²)×(C·n²) matrix, in float64, of conv2d with ``kernel`` (C'×C×k×k), zero ``padding`` (None: k//2)
    and ``stride`` on C×n×n images (m: :func:`conv_output_size`). Conv2d is a cross-correlation: output pixel
    (i, j) reads input pixel (s·i + a − p, s·j + b − p) through tap (a, b), so each C'×C block of taps is written
    where that input pixel lies inside the image (zero padding: nowhere else)."""
    c_out, c_in, k = kernel.shape[0], kernel.shape[1], kernel.shape[-1]
    pad = k // 2 if padding is None else padding
    out = conv_output_size(side, k, stride, pad)
    device = kernel.device
    o, tap = torch.arange(out, device=device), torch.arange(k, device=device)
    # (i, j, a, b) for every output pixel and tap, and the input pixel (ii, jj) it reads
    i, j, a, b = torch.meshgrid(o, o, tap, tap, indexing="ij")
    ii, jj = stride * i + a - pad, stride * j + b - pad
    inside = (ii >= 0) & (ii < side) & (jj >= 0) & (jj < side)
    out_pixel, in_pixel = (i * out + j)[inside], (ii * side + jj)[inside]
    blocks = torch.zeros(out * out, side * side, c_out, c_in, dtype=torch.float64, device=device)
    blocks[out_pixel, in_pixel] = kernel.detach().double().permute(2, 3, 0, 1)[a[inside], b[inside]]
    return blocks.permute(2, 0, 3, 1).reshape(c_out * out * out, c_in * side * side)


def conv_operator_norm(kernel: torch.Tensor, side: int, stride: int = 1, padding: int | None = None) -> float:
    """Exact ‖·‖₂ of the convolution on C×n×n images: the largest singular value of :func:`conv_operator_matrix`
    (:func:`models.spectral_norms.exact_spectral_norm`, float64). Forms the matrix: for small operators."""
    with torch.no_grad():
        return exact_spectral_norm(conv_operator_matrix(kernel, side, stride, padding))


def conv_lipschitz_bound(kernel: torch.Tensor, side: int, stride: int = 1, padding: int | None = None) -> float:
    """A sound upper bound on ‖·‖₂ of the convolution on C×n×n images: the exact norm when its matrix has at most
    :data:`EXACT_MAX_ENTRIES` entries, else :func:`conv_norm_upper_bound` (module docstring)."""
    c_out, c_in, k = kernel.shape[0], kernel.shape[1], kernel.shape[-1]
    out = conv_output_size(side, k, stride, padding)
    if c_out * c_in * (out * side) ** 2 <= EXACT_MAX_ENTRIES:
        return conv_operator_norm(kernel, side, stride, padding)
    return conv_norm_upper_bound(kernel, side, stride, padding)


def pixel_unshuffle_norm() -> float:
    """Lipschitz constant of pixel-unshuffle (space-to-depth, C×n×n → C·r²×(n/r)×(n/r)), and of its inverse
    pixel-shuffle: exactly 1. It moves every pixel to a new place and drops or adds nothing, so it is a permutation
    of the coordinates — an isometry, ‖Px‖ = ‖x‖ — and a downsampling that costs nothing in the bound."""
    return 1.0


# --- the bound above the exact size ----------------------------------------------------------------------------


def polyphase_kernel(kernel: torch.Tensor, stride: int, padding: int) -> tuple[torch.Tensor, int, int]:
    """``(K', d_lo, d_hi)``: the stride-1 kernel (C'×C·s²×k'×k') acting on the s² polyphase components of the image
    that equals the stride-s convolution (module docstring), and the range [d_lo, d_hi] of its tap offsets: output
    pixel i reads component r at position i + d through tap a where a − p = s·d + r (per axis)."""
    c_out, c_in, k = kernel.shape[0], kernel.shape[1], kernel.shape[-1]
    offsets = [(a - padding) // stride for a in range(k)]
    residues = [(a - padding) % stride for a in range(k)]
    d_lo, d_hi = offsets[0], offsets[-1]
    taps = d_hi - d_lo + 1
    out = kernel.new_zeros(c_out, c_in, stride, stride, taps, taps)
    for a in range(k):
        for b in range(k):
            out[:, :, residues[a], residues[b], offsets[a] - d_lo, offsets[b] - d_lo] = kernel[:, :, a, b]
    return out.reshape(c_out, c_in * stride * stride, taps, taps), d_lo, d_hi


def circular_grid(side: int, out_side: int, d_lo: int, d_hi: int) -> int:
    """The smallest N such that the stride-1, zero-padded convolution y_i = Σ_d K_d x_{i+d} (d ∈ [d_lo, d_hi]) from
    n input to m output pixels per side is a compression P·C·Eᵀ of the circular convolution on an N×N grid.

    Output i reads index t = i + d. Inside the image (0 ≤ t < n) the grid index is the same when N ≥ n. In the
    padding, t < 0 wraps to N + t, which must lie outside the image: N ≥ n − d_lo; and t ≥ n must not wrap: N ≥
    m + d_hi. The outputs must also be distinct grid pixels: N ≥ m. ('Same' padding p = k//2 at stride 1: N = n + p.)
    """
    return max(side, out_side, side - d_lo, out_side + d_hi)


def conv_norm_upper_bound(kernel: torch.Tensor, side: int, stride: int = 1, padding: int | None = None,
                          rtol: float = GRAM_RTOL) -> float:  # fmt: skip
    """A provable upper bound on ‖·‖₂ of conv2d with ``kernel`` (C'×C×k×k), zero ``padding`` (None: k//2) and
    ``stride`` on C×n×n images, without forming its matrix: Gram iteration on the circular convolution that
    contains it (module docstring; Delattre et al., ICML 2023; :func:`models.gram_iteration.circular_gram_bound`).
    ``inf`` for a kernel with a non-finite entry."""
    k = kernel.shape[-1]
    pad = k // 2 if padding is None else padding
    if not bool(torch.isfinite(kernel).all()):
        return math.inf
    out = conv_output_size(side, k, stride, pad)
    phases, d_lo, d_hi = polyphase_kernel(kernel.detach().double(), stride, pad)
    if phases.shape[-1] == 1:  # one tap: the identity on pixels ⊗ K₀ (or a compression of it), norm ‖K₀‖₂ exactly
        return exact_spectral_norm(phases[:, :, 0, 0])
    grid = circular_grid(-(-side // stride), out, d_lo, d_hi)
    return circular_gram_bound(phases, grid, rtol).upper  # with its rounding margin


__all__ = [
    "EXACT_MAX_ENTRIES",
    "circular_grid",
    "conv_lipschitz_bound",
    "conv_norm_upper_bound",
    "conv_operator_matrix",
    "conv_operator_norm",
    "conv_output_size",
    "pixel_unshuffle_norm",
    "polyphase_kernel",
]
