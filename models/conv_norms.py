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

  A is formed without the matrix K̂: its entries are the DFT of the kernel's autocorrelation R_Δ = Σ_a K_aᵀK_{a+Δ}
  ((2k−1)² taps; :func:`kernel_autocorrelation`). Each step squares A per frequency with rescaling (float64). The
  iteration stops when the bound is certified tight, i.e. within ``rtol`` of a *lower* bound of the circular norm
  (Rayleigh quotients of power iterates, and Σλ^{2m} / Σλ^m ≤ λ₁^m): frequencies whose upper bound falls below that
  lower bound cannot hold the maximum and are dropped from further squaring — on large spectra first by squarings in
  float32 (three times faster on a CPU) whose bounds are widened by their rounding margin (:func:`screen_margin`).
  The result is multiplied by a rounding margin (:func:`rounding_margin`, about 1 + 1e-10 at 64 channels) that
  covers the float64 rounding of the autocorrelation, the DFT and the squarings.

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
from typing import NamedTuple

import torch

from models.spectral_norms import exact_spectral_norm

#: Operators with at most this many matrix entries (2 MiB in float64; the smaller Gram matrix is then at most
#: 512×512) get their exact norm; larger ones the Gram-iteration bound.
EXACT_MAX_ENTRIES = 2**18
#: Stop the Gram iteration once its upper bound is within this relative distance of a lower bound of the
#: circular convolution's norm (or after ``GRAM_MAX_STEPS`` squarings).
GRAM_RTOL = 1e-3
GRAM_MAX_STEPS = 12
_CHUNK_ENTRIES = 2**22  # complex entries of the per-frequency Gram matrices squared at once (64 MiB)
_SCREEN_MIN_ENTRIES = 2**16  # screen frequencies in float32 above this many entries (F·c²) ...
_SCREEN_MAX_MARGIN = 0.05  # ... while the float32 rounding margin is this small (c up to about 320)
_UNIT_ROUNDOFF = 2.0**-53


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


def kernel_autocorrelation(kernel: torch.Tensor) -> torch.Tensor:
    """R (c×c×(2k₁−1)×(2k₂−1), float64) with R_Δ = Σ_a K_aᵀK_{a+Δ}, c the smaller channel count: A(ω) = K̂(ω)ᴴK̂(ω) =
    Σ_Δ R_Δ e^{−i⟨ω,Δ⟩}. With more input than output channels it is that of Kᵀ (swapped channels), whose per-frequency
    Gram matrix K̂K̂ᴴ (conjugated) has the same nonzero eigenvalues and is smaller."""
    k = kernel.detach().double()
    if k.shape[0] < k.shape[1]:
        k = k.transpose(0, 1)
    taps = k.transpose(0, 1).contiguous()  # (c, other, k₁, k₂)
    # cross-correlation: out[j, i, Δ] = Σ_{o,a} K[o, i, a]·K[o, j, a + Δ] (Δ shifted by k − 1)
    out = torch.nn.functional.conv2d(taps, taps, padding=(k.shape[-2] - 1, k.shape[-1] - 1))
    return out.transpose(0, 1)


def gram_spectrum(autocorrelation: torch.Tensor, grid: int, rows: slice) -> torch.Tensor:
    """A(ω) = Σ_Δ R_Δ e^{−2πi⟨ω,Δ⟩/N} for ω₁ in ``rows`` of the N×N grid and ω₂ ∈ [0, N//2] (the other half:
    conjugates), as real and imaginary parts, (2, F, c, c) float64, by two separable DFT products in real arithmetic
    (the (2k−1)² taps are few; real matrix products are several times faster than complex ones on a CPU)."""
    c, _, t1, t2 = autocorrelation.shape
    device = autocorrelation.device

    def cos_sin(freqs: torch.Tensor, taps: int) -> tuple[torch.Tensor, torch.Tensor]:
        delta = torch.arange(taps, dtype=torch.float64, device=device) - (taps - 1) // 2
        angle = (2 * math.pi / grid) * (freqs.double()[:, None] * delta[None, :])
        return angle.cos(), angle.sin()

    cos1, sin1 = cos_sin(torch.arange(grid, device=device)[rows], t1)
    cos2, sin2 = cos_sin(torch.arange(grid // 2 + 1, device=device), t2)
    taps = autocorrelation.permute(2, 3, 0, 1).reshape(t1, t2, c * c)
    # e^{−i(a+b)} = (cos a cos b − sin a sin b) − i(sin a cos b + cos a sin b)
    c2, s2 = (cos2 @ taps).reshape(t1, -1), (sin2 @ taps).reshape(t1, -1)  # (t1, F₂·c²)
    out = c2.new_empty(2, cos1.shape[0], c2.shape[1])
    torch.mm(cos1, c2, out=out[0]).addmm_(sin1, s2, alpha=-1)
    torch.addmm(out[1], sin1, c2, beta=0, alpha=-1, out=out[1]).addmm_(cos1, s2, alpha=-1)
    return out.reshape(2, -1, c, c)


class GramBound(NamedTuple):
    """Gram iteration's result on the circular convolution: ``upper`` ≥ its norm ≥ ``lower`` after ``steps``
    squarings of the frequencies still in question (``upper`` without the rounding margin from
    :func:`gram_iteration`, with it from :func:`circular_gram_bound`)."""

    upper: float
    lower: float
    steps: int


def gram_iteration(spectrum: torch.Tensor, lower: float = 0.0, rtol: float = GRAM_RTOL,
                   max_steps: int = GRAM_MAX_STEPS) -> GramBound:  # fmt: skip
    """max_ω ‖K̂(ω)‖₂ bounded above and below from ``spectrum`` = A(ω) = K̂(ω)ᴴK̂(ω), Hermitian PSD, given as real and
    imaginary parts (2, F, c, c) of moderate scale (no overflow in its squares): Gram
    iteration per frequency (Delattre et al., ICML 2023), stopped when upper ≤ (1 + rtol)·lower. ``lower`` is a
    lower bound already known (from other frequencies).

    Logarithms throughout: G_t = exp(s_t)·M_t. Each squaring is scaled by one number for all frequencies (1/max‖M‖_F²,
    folded into the matrix products), so M stays near 1 at the largest frequencies; those far below shrink, and are
    dropped once their upper bound falls below the lower bound."""
    frob = frobenius(spectrum)
    if not bool((frob > 0).any()):
        return GramBound(0.0, 0.0, 0)
    log_lower = math.log(lower) if lower > 0 else -math.inf
    if spectrum[0].numel() >= _SCREEN_MIN_ENTRIES and screen_margin(spectrum.shape[-1]) <= _SCREEN_MAX_MARGIN:
        survivors, log_lower = _screen(spectrum, log_lower)
        spectrum, frob = spectrum[:, survivors], frob[survivors]
    previous = 0.5 * torch.diagonal(spectrum[0], dim1=-2, dim2=-1).sum(-1).log()  # log ‖G₀‖_F, ‖G₀‖_F² := tr A
    scale = 0.0  # s_t
    # G_t is squared from one buffer into the other: fresh 10-100 MB tensors at every step would cost page faults
    buffers = (torch.empty_like(spectrum), torch.empty_like(spectrum))

    def free(held: torch.Tensor) -> torch.Tensor:  # the buffer that does not hold ``held`` (the spectrum is kept)
        return buffers[1] if held.data_ptr() == buffers[0].data_ptr() else buffers[0]

    gram, alive = spectrum, torch.arange(spectrum.shape[1], device=spectrum.device)
    step = 1  # G_t = A^(2^(t−1))
    while True:
        log_norm = scale + frob.log()  # log ‖G_t‖_F
        upper = log_norm / 2**step  # σ₁ ≤ ‖G_t‖_F^{1/2^t}
        # Σλ^{2m} ≤ λ₁^m Σλ^m with m = 2^(t−1): σ₁ ≥ (‖G_t‖_F / ‖G_{t−1}‖_F)^{1/2^(t−1)}
        log_lower = max(log_lower, float(((log_norm - previous) / 2 ** (step - 1)).max()))
        if step >= 2:
            log_lower = max(log_lower, _power_lower_bound(spectrum, alive, gram, upper))
        top = float(upper.max())
        if top - log_lower <= math.log1p(rtol) or step >= max_steps:
            return GramBound(math.exp(top), math.exp(log_lower), step)
        keep = upper >= log_lower - 1e-6  # the others are below the norm: they cannot hold the maximum
        count = int(keep.sum())
        if count < len(keep):
            index = keep.nonzero().flatten()
            frob, log_norm, alive = frob[index], log_norm[index], alive[index]
            gram = torch.index_select(gram, 1, index, out=free(gram)[:, :count])
        largest = float(frob.max())
        gram = gram_square(gram, 1 / largest**2, out=free(gram)[:, :count])
        scale, previous = 2 * scale + 2 * math.log(largest), log_norm
        frob = frobenius(gram)
        step += 1


def screen_margin(channels: int) -> float:
    """Relative error bound of :func:`_screen`'s float32 upper bounds (u = 2⁻²⁴): each squaring of a c×c iterate
    moves it by at most 2c·γ_2c ≈ 4c²u relative to its norm (as in :func:`rounding_margin`), the 2^−t roots halve
    each step's share, and converting the spectrum adds u√c: 8c²u in all (0.2 % at 64 channels)."""
    return 8 * channels * channels * 2.0**-24


def _screen(spectrum: torch.Tensor, log_lower: float, steps: int = 3) -> tuple[torch.Tensor, float]:
    """``(indices, log lower bound)``: the frequencies that may hold the maximum after ``steps`` Gram squarings in
    float32 (about three times faster than float64 on a CPU), each normalised to ‖M‖_F = 1. A frequency is dropped
    only when its float32 upper bound, widened by :func:`screen_margin`, is below a lower bound computed in float64
    (Rayleigh quotients of the float64 spectrum): its norm is then provably below the maximum. The survivors are
    bounded again in float64."""
    margin = math.log1p(screen_margin(spectrum.shape[-1]))
    gram = spectrum.to(torch.float32)
    alive = torch.arange(spectrum.shape[1], device=spectrum.device)
    log_norm = frobenius(gram).double().log()  # log ‖G_t‖_F per frequency
    step = 1
    for done in range(steps + 1):
        upper = log_norm / 2**step
        log_lower = max(log_lower, _power_lower_bound(spectrum, alive, gram, upper))
        keep = upper + margin >= log_lower - 1e-6
        if not bool(keep.all()):
            gram, log_norm, alive = gram[:, keep], log_norm[keep], alive[keep]
        if done == steps or len(alive) <= 1:
            return alive, log_lower
        gram = gram_square(gram.mul_((1 / frobenius(gram))[None, :, None, None]))
        log_norm = 2 * log_norm + frobenius(gram).double().log()  # G_{t+1} = ‖G_t‖_F²·MᴴM
        step += 1
    return alive, log_lower


def gram_square(pair: torch.Tensor, alpha: float = 1.0, out: torch.Tensor | None = None) -> torch.Tensor:
    """α·YᴴY for Y = S + iT given as (2, F, c, c) real parts: α(SᵀS + TᵀT) + iα(SᵀT − TᵀS), four accumulated real
    matrix products (several times faster than complex ones on a CPU). It holds for any Y (no symmetry assumed),
    and ‖Y‖₂² = ‖YᴴY‖₂, so rounding never breaks the chain of bounds. ``out``: where to write (not ``pair``)."""
    s, t = pair[0], pair[1]
    out = torch.empty_like(pair) if out is None else out
    torch.baddbmm(out[0], s.mT, s, beta=0, alpha=alpha, out=out[0]).baddbmm_(t.mT, t, alpha=alpha)
    torch.baddbmm(out[1], s.mT, t, beta=0, alpha=alpha, out=out[1]).baddbmm_(t.mT, s, alpha=-alpha)
    return out


def frobenius(pair: torch.Tensor) -> torch.Tensor:
    """‖S + iT‖_F per frequency of a (2, F, c, c) pair."""
    return torch.hypot(torch.linalg.vector_norm(pair[0], dim=(1, 2)), torch.linalg.vector_norm(pair[1], dim=(1, 2)))


def _power_lower_bound(base: torch.Tensor, alive: torch.Tensor, gram: torch.Tensor, upper: torch.Tensor,
                       top: int = 16, steps: int = 8) -> float:  # fmt: skip
    """log of a lower bound of max_ω σ₁(ω): Rayleigh quotients of base = A (≤ σ₁²) at a few power
    iterates, on the ``top`` frequencies by upper bound (``alive``: their places in ``base``), started from the
    largest column of the current Gram iterate (itself a power iterate A^m e_j)."""
    pick = upper.topk(min(top, upper.shape[0])).indices
    where = alive[pick]
    a = torch.complex(base[0, where], base[1, where])
    g = torch.complex(gram[0, pick].to(base.dtype), gram[1, pick].to(base.dtype))
    column = torch.linalg.vector_norm(g, dim=1).argmax(dim=1)
    v = torch.gather(g, 2, column[:, None, None].expand(-1, g.shape[1], 1))
    for _ in range(steps):
        v = a @ v
        v = v / torch.linalg.vector_norm(v, dim=(1, 2), keepdim=True).clamp_min(1e-300)
    rayleigh = (v.mH @ (a @ v)).real.flatten() / torch.linalg.vector_norm(v, dim=(1, 2)).square()
    best = float(rayleigh.max())
    return 0.5 * math.log(best) if best > 0 else -math.inf


def rounding_margin(channels: int, taps: int) -> float:
    """Factor ≥ 1 that covers float64 rounding in :func:`conv_norm_upper_bound` (u = 2⁻⁵³), for the smaller channel
    count c and k taps per side.

    With λ* = max_ω ‖A(ω)‖₂ ≥ ‖K‖_F²/c (Parseval: Σ_ω ‖K̂(ω)‖_F² = N²‖K‖_F²) and ‖Σ_Δ |R_Δ|‖₂ ≤ (Σ_a ‖K_a‖_F)² ≤
    k²‖K‖_F² ≤ k²c·λ*: the autocorrelation (sums of c·k² products) and its DFT ((2k−1)² terms) move A(ω) by at most
    (ck² + (2k−1)² + 2)·u·k²c relative to λ*, which moves σ by half that. Each Gram squaring moves the next iterate by
    at most 2c·γ_2c relative to its norm (‖Y‖₂² ≥ ‖Y‖_F²/c, sums of 2c real products), and the 2^−t roots shrink
    those: 8c²u in all, plus 2cu for the last Frobenius norm and the logarithms. The margin is 4× the sum
    (1 + 1e-10 at 64 channels and 3×3 taps)."""
    u, c, k = _UNIT_ROUNDOFF, channels, taps
    spectrum = (c * k * k + (2 * k - 1) ** 2 + 2) * u * k * k * c / 2
    return 1.0 + 4 * (spectrum + 8 * c * c * u + 2 * c * u + 64 * u)


def circular_gram_bound(kernel: torch.Tensor, grid: int, rtol: float = GRAM_RTOL) -> GramBound:
    """Gram iteration on the circular convolution with ``kernel`` (stride 1) on an N×N grid, frequency rows in
    chunks of bounded memory (each chunk's pruning uses the lower bound of the ones before); the bound is multiplied
    by :func:`rounding_margin`."""
    with torch.no_grad():
        size = float(torch.linalg.vector_norm(kernel.double()))
        if size == 0:
            return GramBound(0.0, 0.0, 0)
        taps = kernel_autocorrelation(kernel.double() / size)  # ‖K‖_F = 1: A(ω) and its squares are moderate
        c = taps.shape[0]
        rows_per_chunk = max(1, _CHUNK_ENTRIES // ((grid // 2 + 1) * c * c))
        upper, lower, steps = 0.0, 0.0, 0
        for start in range(0, grid, rows_per_chunk):
            spectrum = gram_spectrum(taps, grid, slice(start, start + rows_per_chunk))
            part = gram_iteration(spectrum, lower, rtol)
            upper, lower, steps = max(upper, part.upper), max(lower, part.lower), max(steps, part.steps)
        margin = rounding_margin(c, kernel.shape[-1])
        return GramBound(upper * size * margin, lower * size, steps)


def conv_norm_upper_bound(kernel: torch.Tensor, side: int, stride: int = 1, padding: int | None = None,
                          rtol: float = GRAM_RTOL) -> float:  # fmt: skip
    """A provable upper bound on ‖·‖₂ of conv2d with ``kernel`` (C'×C×k×k), zero ``padding`` (None: k//2) and
    ``stride`` on C×n×n images, without forming its matrix: Gram iteration on the circular convolution that
    contains it (module docstring; Delattre et al., ICML 2023), times :func:`rounding_margin`. ``inf`` for a kernel
    with a non-finite entry."""
    k = kernel.shape[-1]
    pad = k // 2 if padding is None else padding
    if not bool(torch.isfinite(kernel).all()):
        return math.inf
    out = conv_output_size(side, k, stride, pad)
    phases, d_lo, d_hi = polyphase_kernel(kernel.detach().double(), stride, pad)
    if phases.shape[-1] == 1:  # one tap: the identity on pixels ⊗ K₀ (or a compression of it), norm ‖K₀‖₂ exactly
        return exact_spectral_norm(phases[:, :, 0, 0])
    grid = circular_grid(-(-side // stride), out, d_lo, d_hi)
    return circular_gram_bound(phases, grid, rtol).upper


__all__ = [
    "EXACT_MAX_ENTRIES",
    "GramBound",
    "circular_gram_bound",
    "circular_grid",
    "conv_lipschitz_bound",
    "conv_norm_upper_bound",
    "conv_operator_matrix",
    "conv_operator_norm",
    "conv_output_size",
    "gram_iteration",
    "gram_spectrum",
    "gram_square",
    "frobenius",
    "kernel_autocorrelation",
    "pixel_unshuffle_norm",
    "polyphase_kernel",
    "rounding_margin",
]
