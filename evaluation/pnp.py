"""Plug-and-play image reconstruction with a trained (1-Lipschitz) denoiser.

Murari, "Neural Networks as Dynamical Systems: Hamiltonian and 1-Lipschitz Networks", "The Plug-and-Play
Method", "Averaged maps", "Convergence Theorem", "Use in a Deblurring Task". A clean image x is observed as
y = Kx + σ·ε, ε ~ N(0, I), K a blur (the seed deblurs a motion blur); with the data term f(x) = ½‖Kx − y‖², the
proximal-gradient (forward–backward) iteration with the denoiser D in place of the proximal map is::

    x_{k+1} = D_λ(x_k − α·Kᵀ(Kx_k − y)),    D_λ = (1 − λ)·id + λ·D,    x_0 = y.

Convergence. G = id − α∇f is (α‖K‖₂²/2)-averaged for α ∈ (0, 2/‖K‖₂²) (∇f is ‖K‖₂²-Lipschitz and f convex). If
Lip(D) ≤ 1 (a sound bound, :func:`models.lipschitz_bound`; the ``lipschitz`` family has 1 up to rounding) and
λ ∈ (0, 1), D_λ is λ-averaged by definition. A composition of averaged maps is averaged (Combettes & Yamada 2015,
Prop. 2.4), with parameter a = (a₁ + a₂ − 2a₁a₂)/(1 − a₁a₂), so the iterates converge to a fixed point of
T = D_λ∘G whenever one exists. λ = 1 (plain D) keeps T nonexpansive only. A nonexpansive T also makes the step
lengths ‖x_{k+1} − x_k‖ = ‖T x_k − T x_{k−1}‖ non-increasing: :func:`plug_and_play` checks that on every image
(``pnp_monotone@σ``, the fraction of images where it held, up to float rounding) and reports the last relative step
(``pnp_residual@σ``), next to the reconstruction's PSNR (``pnp_psnr@σ``) and the observation's (``pnp_input_psnr@σ``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from core.metrics import metric_key
from evaluation.batching import batch_slices
from evaluation.registry import Context, register_evaluation, within
from evaluation.regression import mse, psnr
from models import LipschitzBoundUnavailable, lipschitz_bound
from models.spectral_norms import exact_spectral_norm

#: this evaluation's protocol revision: bump it when a change alters its numbers on purpose (core/protocol.py)
PROTOCOL_REVISION = 1

# slack on Lip(D) ≤ 1: the spectrally normalised layers give 1 up to float rounding of the exact (float64) norms
NONEXPANSIVE_SLACK = 1e-6
# relative slack on ‖x_{k+1} − x_k‖ ≤ ‖x_k − x_{k−1}‖ (float32 forward passes), plus an absolute floor
MONOTONE_RTOL, MONOTONE_ATOL = 1e-4, 1e-6


def blur_kernel(kind: str) -> torch.Tensor | None:
    """The blur's kernel (k_h × k_w, float64, summing to 1), or ``None`` for K = I. ``motion``: a horizontal
    3-pixel box (a short motion blur, as in Murari's deblurring example); ``gaussian``: 3×3 with std 0.8."""
    if kind == "none":
        return None
    if kind == "motion":
        return torch.full((1, 3), 1.0 / 3.0, dtype=torch.float64)
    if kind == "gaussian":
        t = torch.arange(-1.0, 2.0, dtype=torch.float64)
        g = torch.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 0.8**2))
        return g / g.sum()
    raise ValueError(f"unknown blur {kind!r} (motion, gaussian, none)")


def blur_operator(kind: str, side: int) -> torch.Tensor:
    """K as a (side², side²) float64 matrix acting on flattened side×side images: the kernel's 'same' correlation
    with zero padding (the identity for ``none``)."""
    d = side * side
    kernel = blur_kernel(kind)
    if kernel is None:
        return torch.eye(d, dtype=torch.float64)
    basis = torch.eye(d, dtype=torch.float64).reshape(d, 1, side, side)
    kh, kw = kernel.shape
    columns = nn.functional.conv2d(basis, kernel[None, None], padding=(kh // 2, kw // 2))  # row j = K e_j
    return columns.reshape(d, d).T.contiguous()


class ConvBlur:
    """K on images (N, C, H, W) as a per-channel convolution ('same', zero padding), and its adjoint Kᵀ (the
    transposed convolution): the matrix of :func:`blur_operator` is never formed, so photographs of any size work.
    ``norm_bound`` = ‖k‖₁ ≥ ‖K‖₂ (Young's convolution inequality ‖k ∗ x‖₂ ≤ ‖k‖₁‖x‖₂; 1 for a blur), so the step
    α = 1/‖k‖₁² stays below 2/‖K‖₂² and the convergence argument holds with the bound in place of the norm."""

    def __init__(self, kind: str, channels: int, dtype: torch.dtype, device: torch.device):
        kernel = blur_kernel(kind)
        self.kernel = None if kernel is None else kernel.to(dtype=dtype, device=device).expand(channels, 1, -1, -1)
        self.channels = channels
        self.padding = (0, 0) if kernel is None else (kernel.shape[0] // 2, kernel.shape[1] // 2)
        self.norm_bound = 1.0 if kernel is None else float(kernel.abs().sum())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel is None:
            return x
        return nn.functional.conv2d(x, self.kernel, padding=self.padding, groups=self.channels)

    def adjoint(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel is None:
            return x
        return nn.functional.conv_transpose2d(x, self.kernel, padding=self.padding, groups=self.channels)


class MatrixBlur:
    """K on flattened single-channel square images (N, side²) as the exact matrix of :func:`blur_operator`, with
    ``norm_bound`` its exact norm ‖K‖₂."""

    def __init__(self, kind: str, side: int, dtype: torch.dtype, device: torch.device):
        matrix = blur_operator(kind, side)
        self.norm_bound = exact_spectral_norm(matrix)
        self.matrix = matrix.to(dtype=dtype, device=device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.matrix.T

    def adjoint(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.matrix


def blur_for(kind: str, images: torch.Tensor) -> ConvBlur | MatrixBlur:
    """The blur of the data's layout: a convolution on (N, C, H, W) images, the exact matrix on flat square ones.

    Raises:
        ValueError: flat data whose size is not a square.
    """
    if images.dim() == 4:
        return ConvBlur(kind, images.shape[1], images.dtype, images.device)
    d = images[0].numel()
    side = math.isqrt(d)
    if side * side != d:
        raise ValueError(f"plug-and-play needs images: (N, C, H, W), or flat square ones; {d} pixels is not a square")
    return MatrixBlur(kind, side, images.dtype, images.device)


def averaged_parameter(a1: float, a2: float) -> float:
    """Averagedness of the composition of an a₁- and an a₂-averaged map (Combettes & Yamada 2015, Prop. 2.4)."""
    return (a1 + a2 - 2 * a1 * a2) / (1 - a1 * a2)


def convergence_guarantee(denoiser_lipschitz: float | None, relaxation: float, step_size: float,
                          operator_norm: float) -> dict:
    """Whether T = D_λ∘(id − α∇f) is averaged (module docstring), with the reason and the parameters."""
    a_gradient = step_size * operator_norm**2 / 2
    info = {"denoiser_lipschitz": denoiser_lipschitz, "relaxation": relaxation, "step_size": step_size,
            "operator_norm": operator_norm, "gradient_step_averaged": a_gradient}
    if denoiser_lipschitz is None:
        reason = "the denoiser has no sound Lipschitz bound"
    elif denoiser_lipschitz > 1 + NONEXPANSIVE_SLACK:
        reason = f"the denoiser's Lipschitz bound {denoiser_lipschitz:.6g} exceeds 1"
    elif not a_gradient < 1:
        reason = f"step size α = {step_size:.4g} is not below 2/‖K‖₂² = {2 / operator_norm**2:.4g}"
    elif relaxation >= 1:
        reason = "relaxation λ = 1: D is only known to be nonexpansive, not averaged (take λ < 1)"
    else:
        info.update(averaged=True, averaged_parameter=averaged_parameter(relaxation, a_gradient),
                    reason="Lip(D) ≤ 1, λ < 1 and α < 2/‖K‖₂²: D_λ and the gradient step are averaged, so is T")
        return info
    info.update(averaged=False, averaged_parameter=None, reason=reason)
    return info


@torch.no_grad()
def plug_and_play(
    model: nn.Module,
    clean: torch.Tensor,
    sigmas: list[float],
    iterations: int,
    blur: str = "motion",
    step_size: float | None = None,
    relaxation: float = 0.5,
    seed: int = 0,
    peak: float = 1.0,
    batch_size: int | None = None,
) -> tuple[dict[str, float], dict]:
    """Deblur-and-denoise every clean test image ((N, C, H, W), or flat square (N, side²)) at each noise level σ
    with the iteration of the module docstring (the blur of :func:`blur_for`), ``model`` as the denoiser D,
    ``batch_size`` images at a time.

    Returns:
        ``(metrics, info)``: ``pnp_psnr@σ``, ``pnp_input_psnr@σ`` (the observation y against x), ``pnp_residual@σ``
        (largest last relative step ‖x_K − x_{K−1}‖/‖x_{K−1}‖ over the images), ``pnp_monotone@σ`` (fraction of
        images whose step lengths never grew), ``pnp_averaged`` (1 when convergence is guaranteed) and
        ``pnp_denoiser_lipschitz`` (when a bound exists); info holds the operator, step size and the reason.
    Raises:
        ValueError: flat images that are not square, or a model that does not map images to images of their size.
    """
    model.eval()
    n = clean.shape[0]
    x_true = clean if clean.dim() == 4 else clean.reshape(n, -1)
    operator = blur_for(blur, x_true)
    alpha = step_size if step_size is not None else 1.0 / operator.norm_bound**2
    try:
        lip = lipschitz_bound(model)
    except LipschitzBoundUnavailable:
        lip = None
    info = convergence_guarantee(lip, relaxation, alpha, operator.norm_bound)
    info.update(blur=blur, iterations=iterations, seed=seed, x0="y (the observation)")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    metrics: dict[str, float] = {"pnp_averaged": float(info["averaged"])}
    if lip is not None:
        metrics["pnp_denoiser_lipschitz"] = lip
    for sigma in sigmas:
        noise = torch.randn(x_true.shape, generator=gen, dtype=x_true.dtype).to(x_true.device)
        y = operator(x_true) + sigma * noise
        x = torch.empty_like(y)
        monotone = torch.ones(n, dtype=torch.bool, device=y.device)
        relative = torch.zeros(n, dtype=y.dtype, device=y.device)
        for part in batch_slices(n, batch_size):
            x[part], monotone[part], relative[part] = _reconstruct(
                model, y[part], operator, alpha, relaxation, iterations
            )
        metrics[metric_key("pnp_psnr", sigma)] = psnr(mse(x, x_true), peak)
        metrics[metric_key("pnp_input_psnr", sigma)] = psnr(mse(y, x_true), peak)
        metrics[metric_key("pnp_residual", sigma)] = float(relative.max())
        metrics[metric_key("pnp_monotone", sigma)] = float(monotone.float().mean())
    return metrics, info


def _reconstruct(
    model: nn.Module, y: torch.Tensor, blur: ConvBlur | MatrixBlur, alpha: float, relaxation: float, iterations: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The forward–backward iteration x ← D_λ(x − α·Kᵀ(Kx − y)) from x₀ = y on a batch of observations:
    ``(x_K, monotone, relative last step)`` per image."""
    n = len(y)
    x = y.clone()
    previous = None  # ‖x_k − x_{k−1}‖ per image
    monotone = torch.ones(n, dtype=torch.bool, device=y.device)
    relative = torch.zeros(n, dtype=y.dtype, device=y.device)
    for _ in range(iterations):
        z = x - alpha * blur.adjoint(blur(x) - y)  # gradient step on ½‖Kx − y‖²
        denoised = model(z).reshape(z.shape)
        x_next = (1 - relaxation) * z + relaxation * denoised
        step = (x_next - x).flatten(1).norm(dim=1)
        if previous is not None:
            monotone &= step <= previous * (1 + MONOTONE_RTOL) + MONOTONE_ATOL
        relative = step / x.flatten(1).norm(dim=1).clamp_min(1e-12)
        previous, x = step, x_next
    return x, monotone, relative


def pnp_relations(metrics: dict[str, float]) -> dict[str, bool]:
    """The monotone fraction is a fraction; the last relative step is ≥ 0."""
    return within(metrics, {"pnp_monotone": (0.0, 1.0), "pnp_residual": (0.0, math.inf)})


@register_evaluation(
    "plug_and_play", ("denoising",), position=40, sanity=pnp_relations,
    smoke={"plug_and_play": {"sigmas": [0.0, 0.05], "iterations": 5}},
)  # fmt: skip
def run_plug_and_play(ctx: Context) -> None:
    """A job's ``evaluate.plug_and_play``: deblurring with the model as the denoiser; a warning when convergence
    is not guaranteed."""
    ctx.step("plug_and_play")
    q = ctx.spec.evaluate.plug_and_play
    pnp_metrics, ctx.info["plug_and_play"] = plug_and_play(
        ctx.model, ctx.y, q.sigmas, q.iterations, q.blur, q.step_size, q.relaxation, q.seed, ctx.data.peak,
        ctx.spec.evaluate.batch_size,
    )  # fmt: skip
    ctx.metrics.update(pnp_metrics)
    if not ctx.info["plug_and_play"]["averaged"]:
        ctx.warn(f"plug-and-play convergence not guaranteed: {ctx.info['plug_and_play']['reason']}")


__all__ = ["averaged_parameter", "blur_kernel", "blur_operator", "convergence_guarantee", "plug_and_play"]
