"""Gram iteration on a circular convolution: a certified upper bound on its norm max_ω ‖K̂(ω)‖₂ that forms no
operator matrix (Delattre, Barthélemy, Araujo & Allauzen, "Efficient Bound of Lipschitz Constant for Convolutional
Layers by Gram Iteration", ICML 2023). :mod:`models.conv_norms` says why it also bounds the zero-padded convolution.

Per frequency ω of the N×N grid, A(ω) = K̂(ω)ᴴK̂(ω) (Hermitian PSD, eigenvalues λᵢ = σᵢ²) is the DFT of the kernel's
autocorrelation R_Δ = Σ_a K_aᵀK_{a+Δ} ((2k−1)² taps: :func:`kernel_autocorrelation`, :func:`gram_spectrum`).
With G₁ = A and G_{t+1} = G_tᴴG_t = A^(2^t) (:func:`gram_bounds`):

    σ₁ ≤ ‖G_t‖_F^{1/2^t} = (Σᵢ σᵢ^{2^(t+1)})^{1/2^(t+1)}      (Delattre et al.: the Gram iteration bound),
    σ₁ ≥ (‖G_t‖_F / ‖G_{t−1}‖_F)^{1/2^(t−1)}                   (Σλ^{2m} ≤ λ₁^m Σλ^m, ‖G₀‖_F² := tr A),

and Rayleigh quotients of A at power iterates are lower bounds too. Every frequency whose upper bound is not below
the best lower bound is squared again (the others cannot hold the maximum); the iteration stops when the largest
upper bound is within ``rtol`` of the lower bound: certified tight for the circular convolution.

On a CPU (64 channels on a 33×33 grid: 561 frequencies of 64×64 matrices) the work is the squarings, so: complex
matrices are kept as real and imaginary parts (real matrix products are several times faster than complex ones);
one scale per squaring is folded into the products; two buffers are reused; and the first squarings run in
float32 (three times faster again) on a float32 spectrum (:func:`screen`). There a frequency is only dropped when
its float32 upper bound, widened by rigorous rounding bounds, is below a lower bound computed in float64; the
survivors' spectrum is computed again in float64 (:func:`spectrum_at`) and bounded there. Rounding: see
:func:`rounding_margin` (float64) and :func:`screen_bound` (float32).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

GRAM_RTOL = 1e-3  # stop once the upper bound is within this of a lower bound of the circular norm ...
GRAM_MAX_STEPS = 12  # ... or after this many squarings
_CHUNK_ENTRIES = 2**23  # real entries of the Gram matrices of one chunk of frequencies (64 MiB in float64)
_SCREEN_MIN_ENTRIES = 2**16  # screen in float32 from this many entries (F·c²) ...
_SCREEN_MAX_MARGIN = 0.05  # ... while the float32 rounding margin is this small (c up to about 320)
_U64, _U32 = 2.0**-53, 2.0**-24  # unit roundoffs


class GramBound(NamedTuple):
    """``upper`` ≥ the circular convolution's norm ≥ ``lower``, after ``steps`` Gram squarings."""

    upper: float
    lower: float
    steps: int


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


def _cos_sin(angle: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return angle.cos(), angle.sin()


def _offsets(taps: int, device: torch.device) -> torch.Tensor:
    return torch.arange(taps, dtype=torch.float64, device=device) - (taps - 1) // 2


def gram_spectrum(autocorrelation: torch.Tensor, grid: int, rows: slice, dtype=torch.float64) -> torch.Tensor:
    """A(ω) = Σ_Δ R_Δ e^{−2πi⟨ω,Δ⟩/N} for ω₁ in ``rows`` of the N×N grid and ω₂ ∈ [0, N//2] (the other half:
    conjugates), as real and imaginary parts (2, F, c, c) in ``dtype``, by two separable DFT products in real
    arithmetic (each entry a sum of 2(2k−1)² products)."""
    c, _, t1, t2 = autocorrelation.shape
    device = autocorrelation.device
    step = 2 * math.pi / grid
    w1 = torch.arange(grid, device=device)[rows].double()
    w2 = torch.arange(grid // 2 + 1, device=device).double()
    cos1, sin1 = (m.to(dtype) for m in _cos_sin(step * w1[:, None] * _offsets(t1, device)))
    cos2, sin2 = (m.to(dtype) for m in _cos_sin(step * w2[:, None] * _offsets(t2, device)))
    taps = autocorrelation.permute(2, 3, 0, 1).reshape(t1, t2, c * c).to(dtype)
    # e^{−i(a+b)} = (cos a cos b − sin a sin b) − i(sin a cos b + cos a sin b)
    c2, s2 = (cos2 @ taps).reshape(t1, -1), (sin2 @ taps).reshape(t1, -1)  # (t1, F₂·c²)
    out = c2.new_empty(2, cos1.shape[0], c2.shape[1])
    torch.mm(cos1, c2, out=out[0]).addmm_(sin1, s2, alpha=-1)
    torch.addmm(out[1], sin1, c2, beta=0, alpha=-1, out=out[1]).addmm_(cos1, s2, alpha=-1)
    return out.reshape(2, -1, c, c)


def spectrum_at(autocorrelation: torch.Tensor, grid: int, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """A(ω) at the frequencies (w1, w2) only, (2, P, c, c) float64: one DFT product over the (2k−1)² taps."""
    c, _, t1, t2 = autocorrelation.shape
    device = autocorrelation.device
    rows = w1.double()[:, None, None] * _offsets(t1, device)[:, None]
    columns = w2.double()[:, None, None] * _offsets(t2, device)
    cos, sin = _cos_sin((2 * math.pi / grid) * (rows + columns).reshape(len(w1), -1))
    taps = autocorrelation.permute(2, 3, 0, 1).reshape(t1 * t2, c * c)
    return torch.stack([cos @ taps, -(sin @ taps)]).reshape(2, -1, c, c)


def gram_square(pair: torch.Tensor, alpha: float = 1.0, out: torch.Tensor | None = None) -> torch.Tensor:
    """α·YᴴY for Y = S + iT given as (2, F, c, c) real parts: α(SᵀS + TᵀT) + iα(SᵀT − TᵀS), four accumulated real
    matrix products. It holds for any Y (no symmetry assumed), and ‖Y‖₂² = ‖YᴴY‖₂, so rounding never breaks the
    chain of bounds. ``out``: where to write (not ``pair``)."""
    s, t = pair[0], pair[1]
    out = torch.empty_like(pair) if out is None else out
    torch.baddbmm(out[0], s.mT, s, beta=0, alpha=alpha, out=out[0]).baddbmm_(t.mT, t, alpha=alpha)
    torch.baddbmm(out[1], s.mT, t, beta=0, alpha=alpha, out=out[1]).baddbmm_(t.mT, s, alpha=-alpha)
    return out


def frobenius(pair: torch.Tensor) -> torch.Tensor:
    """‖S + iT‖_F per frequency of a (2, F, c, c) pair, in float64."""
    norms = torch.hypot(torch.linalg.vector_norm(pair[0], dim=(1, 2)), torch.linalg.vector_norm(pair[1], dim=(1, 2)))
    return norms.double()


def rayleigh_lower_bound(a: torch.Tensor, start: torch.Tensor, steps: int = 4) -> float:
    """log of a lower bound of max σ₁ over the frequencies of ``a`` ((2, P, c, c) float64 A(ω)): the largest Rayleigh
    quotient vᴴAv/vᴴv ≤ λ₁ = σ₁² after ``steps`` power steps from the largest column of ``start`` (a Gram iterate of
    the same frequencies, whose columns are power iterates A^m e_j already)."""
    a = torch.complex(a[0], a[1])
    g = torch.complex(start[0].double(), start[1].double())
    column = torch.linalg.vector_norm(g, dim=1).argmax(dim=1)
    v = torch.gather(g, 2, column[:, None, None].expand(-1, g.shape[1], 1))
    for _ in range(steps):
        v = a @ v
        v = v / torch.linalg.vector_norm(v, dim=(1, 2), keepdim=True).clamp_min(1e-300)
    rayleigh = (v.mH @ (a @ v)).real.flatten() / torch.linalg.vector_norm(v, dim=(1, 2)).square()
    best = float(rayleigh.max())
    return 0.5 * math.log(best) if best > 0 else -math.inf


def gram_bounds(spectrum: torch.Tensor, lower: float = 0.0, rtol: float = GRAM_RTOL,
                max_steps: int = GRAM_MAX_STEPS) -> GramBound:  # fmt: skip
    """max_ω ‖K̂(ω)‖₂ bounded above and below from ``spectrum`` = A(ω) ((2, F, c, c) float64, of moderate scale: no
    overflow in its squares) by Gram iteration per frequency, stopped when upper ≤ (1 + rtol)·lower. ``lower``: a
    lower bound already known (from other frequencies). Logarithms throughout: G_t = exp(s_t)·M_t, each squaring
    scaled by one number, 1/max‖M‖_F² (folded into the products)."""
    frob = frobenius(spectrum)
    if not bool((frob > 0).any()):
        return GramBound(0.0, lower, 0)
    log_lower = math.log(lower) if lower > 0 else -math.inf
    previous = 0.5 * torch.diagonal(spectrum[0], dim1=-2, dim2=-1).sum(-1).log()  # log ‖G₀‖_F
    scale = 0.0  # s_t
    buffers = (torch.empty_like(spectrum), torch.empty_like(spectrum))  # fresh tensors would cost page faults

    def free(held: torch.Tensor) -> torch.Tensor:  # the buffer that does not hold ``held`` (the spectrum is kept)
        return buffers[1] if held.data_ptr() == buffers[0].data_ptr() else buffers[0]

    gram, alive = spectrum, torch.arange(spectrum.shape[1], device=spectrum.device)
    step = 1  # G_t = A^(2^(t−1))
    while True:
        log_norm = scale + frob.log()  # log ‖G_t‖_F
        upper = log_norm / 2**step
        log_lower = max(log_lower, float(((log_norm - previous) / 2 ** (step - 1)).max()))
        if step >= 2:
            pick = upper.topk(min(8, len(upper))).indices
            log_lower = max(log_lower, rayleigh_lower_bound(spectrum[:, alive[pick]], gram[:, pick]))
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


def screen_bound(channels: int, autocorrelation: torch.Tensor) -> tuple[float, float]:
    """``(relative, absolute)`` rounding bounds of :func:`screen` (u = 2⁻²⁴): the float32 spectrum Ã(ω) differs
    from A(ω) by at most ``absolute`` in norm — each entry is a sum of 2(2k−1)² products of taps rounded to float32
    with cosines and sines, so |ΔA| ≤ γ·Σ_Δ|R_Δ| entrywise, γ = (2(2k−1)² + 4)·u, and ‖ΔA‖₂ ≤ γ·Σ_Δ‖R_Δ‖_F — and the
    float32 squarings bound ‖Ã(ω)‖₂ within a factor 1 + ``relative``: each moves the next iterate by at most
    2c·γ_2c ≈ 4c²u relative to its norm (‖Y‖₂² ≥ ‖Y‖_F²/c), and the 2^−t roots halve each step's share: 8c²u."""
    taps = autocorrelation.shape[-1] * autocorrelation.shape[-2]
    absolute = (2 * taps + 4) * _U32 * float(torch.linalg.vector_norm(autocorrelation, dim=(0, 1)).sum())
    return 8 * channels * channels * _U32, absolute * 1.01


def screen(autocorrelation: torch.Tensor, grid: int, rows: slice, log_lower: float,
           steps: int = 3) -> tuple[torch.Tensor, torch.Tensor, float]:  # fmt: skip
    """``(w1, w2, log lower bound)``: the frequencies of ``rows`` that may hold the maximum, after ``steps`` Gram
    squarings in float32 of the float32 spectrum, each frequency normalised to ‖M‖_F = 1. A frequency is dropped
    only when σ₁(ω)² ≤ ‖Ã(ω)‖₂ + absolute ≤ exp(2·upper)·(1 + relative) + absolute (:func:`screen_bound`) is below
    the square of a lower bound computed in float64 (:func:`rayleigh_lower_bound` on :func:`spectrum_at`)."""
    c, half = autocorrelation.shape[0], grid // 2 + 1
    relative, absolute = screen_bound(c, autocorrelation)
    gram = gram_spectrum(autocorrelation, grid, rows, torch.float32)
    index = torch.arange(gram.shape[1], device=gram.device)
    w1, w2 = rows.start + index // half, index % half
    frob = frobenius(gram)  # of the stored iterate M
    log_norm = frob.log()  # log ‖G_t‖_F per frequency, G_t = ‖G_t‖_F·M/‖M‖_F
    alive = index
    step = 1
    for done in range(steps + 1):
        upper = log_norm / 2**step
        if step >= 2:
            pick = upper.topk(min(8, len(upper))).indices
            exact = spectrum_at(autocorrelation, grid, w1[alive[pick]], w2[alive[pick]])
            log_lower = max(log_lower, rayleigh_lower_bound(exact, gram[:, pick]))
        bound = torch.exp(2 * upper) * (1 + relative) + absolute  # ≥ σ₁(ω)² (an all-zero Ã(ω): absolute)
        if log_lower > -math.inf:
            keep = bound >= math.exp(2 * log_lower) * (1 - 1e-6)
            if not bool(keep.all()):
                gram, frob, log_norm, alive = gram[:, keep], frob[keep], log_norm[keep], alive[keep]
        if done == steps or len(alive) <= 1:
            break
        inverse = torch.where(frob > 0, 1 / frob, 0.0).float()  # an all-zero Ã(ω) stays zero
        gram = gram_square(gram.mul_(inverse[None, :, None, None]))
        frob = frobenius(gram)
        log_norm = torch.where(log_norm > -math.inf, 2 * log_norm + frob.log(), log_norm)
        step += 1
    return w1[alive], w2[alive], log_lower


def rounding_margin(channels: int, taps: int) -> float:
    """Factor ≥ 1 that covers float64 rounding in :func:`circular_gram_bound` (u = 2⁻⁵³), for the smaller channel
    count c and k taps per side.

    With λ* = max_ω ‖A(ω)‖₂ ≥ ‖K‖_F²/c (Parseval: Σ_ω ‖K̂(ω)‖_F² = N²‖K‖_F²) and ‖Σ_Δ |R_Δ|‖₂ ≤ (Σ_a ‖K_a‖_F)² ≤
    k²‖K‖_F² ≤ k²c·λ*: the autocorrelation (sums of c·k² products) and its DFT (2(2k−1)² terms) move A(ω) by at most
    (ck² + 2(2k−1)² + 4)·u·k²c relative to λ*, which moves σ by half that. Each Gram squaring moves the next iterate
    by at most 2c·γ_2c relative to its norm (‖Y‖₂² ≥ ‖Y‖_F²/c, sums of 2c real products), and the 2^−t roots shrink
    those: 8c²u in all, plus 2cu for the last Frobenius norm and the logarithms. The margin is 4× the sum
    (1 + 1e-10 at 64 channels and 3×3 taps)."""
    u, c, k = _U64, channels, taps
    spectrum = (c * k * k + 2 * (2 * k - 1) ** 2 + 4) * u * k * k * c / 2
    return 1.0 + 4 * (spectrum + 8 * c * c * u + 2 * c * u + 64 * u)


def circular_gram_bound(kernel: torch.Tensor, grid: int, rtol: float = GRAM_RTOL) -> GramBound:
    """Gram iteration on the circular convolution with ``kernel`` (stride 1) on an N×N grid, float64 throughout
    except the screening (:func:`screen`, on large spectra), frequency rows in chunks of bounded memory (each chunk
    pruned with the lower bound of the ones before); ``upper`` is multiplied by :func:`rounding_margin`."""
    with torch.no_grad():
        size = float(torch.linalg.vector_norm(kernel.double()))
        if size == 0:
            return GramBound(0.0, 0.0, 0)
        taps = kernel_autocorrelation(kernel.double() / size)  # ‖K‖_F = 1: A(ω) and its squares are moderate
        c, half = taps.shape[0], grid // 2 + 1
        relative, _ = screen_bound(c, taps)
        screening = c * c * grid * half >= _SCREEN_MIN_ENTRIES and relative <= _SCREEN_MAX_MARGIN
        rows_per_chunk = max(1, _CHUNK_ENTRIES // (2 * half * c * c))
        upper, lower, steps = 0.0, 0.0, 0
        for start in range(0, grid, rows_per_chunk):
            rows = slice(start, min(grid, start + rows_per_chunk))
            if screening:
                w1, w2, log_lower = screen(taps, grid, rows, math.log(lower) if lower > 0 else -math.inf)
                lower = max(lower, math.exp(log_lower))
                if len(w1) == 0:
                    continue  # no frequency of these rows can hold the maximum
                spectrum = spectrum_at(taps, grid, w1, w2)
            else:
                spectrum = gram_spectrum(taps, grid, rows)
            part = gram_bounds(spectrum, lower, rtol)
            upper, lower, steps = max(upper, part.upper), max(lower, part.lower), max(steps, part.steps)
        margin = rounding_margin(c, kernel.shape[-1])
        return GramBound(upper * size * margin, lower * size, steps)


__all__ = [
    "GRAM_MAX_STEPS",
    "GRAM_RTOL",
    "GramBound",
    "circular_gram_bound",
    "frobenius",
    "gram_bounds",
    "gram_spectrum",
    "gram_square",
    "kernel_autocorrelation",
    "rayleigh_lower_bound",
    "rounding_margin",
    "screen",
    "screen_bound",
    "spectrum_at",
]
