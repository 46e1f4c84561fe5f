"""What a job measures: the evaluate section of the spec, one field per registered evaluation."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from core.spec.base import NonNegFloat, PosFloat, StrictModel, bounded_unique


class GaussianEval(StrictModel):
    sigmas: list[NonNegFloat] = Field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4, 0.5], min_length=1)
    repeats: int = Field(10, ge=1, le=1000)
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @field_validator("sigmas")
    @classmethod
    def _unique_sigmas(cls, v: list[float]) -> list[float]:
        return bounded_unique(v, "sigma")


class AttackEval(StrictModel):
    """What every attack evaluation has: the norms and the budgets ε (input units)."""

    norm: list[Literal["Linf", "L2"]] = Field(default_factory=lambda: ["Linf", "L2"], min_length=1)
    eps: list[PosFloat] = Field(min_length=1)

    @field_validator("norm", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        return [v] if isinstance(v, str) else v

    @field_validator("eps")
    @classmethod
    def _unique_eps(cls, v: list[float]) -> list[float]:
        return bounded_unique(v, "eps")


class PGDEval(AttackEval):
    """Projected gradient descent through torchattacks (PGD for L∞, PGDL2 for L2)."""

    steps: int = Field(50, ge=1, le=10_000)
    restarts: int = Field(1, ge=1, le=100)
    step_size: PosFloat | None = None  # default 2.5·ε/steps (Madry et al.)
    seed: int = Field(0, ge=0, le=2**31 - 1)


#: Croce & Hein's standard protocol (evaluation.autoattack): its members in order, iterations and Square queries
SUITE_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-cw", "apgd-t", "fab-t", "square")
SUITE_STEPS = 100
SUITE_QUERIES = 5000
MIN_SUITE_STEPS = 10
SuiteAttack = Literal["apgd-ce", "apgd-dlr", "apgd-cw", "apgd-t", "fab-t", "square"]


class AutoAttackEval(AttackEval):
    """The strong attack suite: Croce & Hein's standard protocol (AutoAttack, ICML 2020) from torchattacks' APGD-CE,
    APGD with a margin loss (DLR; Carlini–Wagner on 2 classes), APGD-T, FAB-T and Square, each run on what every
    earlier attack failed on and only where it applies (``evaluation.autoattack``); the result records which ran,
    with every setting."""

    norm: list[Literal["Linf", "L2"]] = Field(default_factory=lambda: ["Linf"], min_length=1)
    attacks: list[SuiteAttack] = Field(default_factory=lambda: list(SUITE_ATTACKS), min_length=1)
    steps: int = Field(
        SUITE_STEPS, ge=1, le=10_000, description=f"iterations of the APGD members and FAB-T (≥ {MIN_SUITE_STEPS})"
    )
    queries: int = Field(SUITE_QUERIES, ge=1, le=100_000, description="queries of Square")
    restarts: int = Field(1, ge=1, le=100, description="restarts of every member (the targeted ones: per target)")
    sanity: bool = Field(True, description="also attack at the whole data range, where accuracy must reach chance")
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @field_validator("attacks")
    @classmethod
    def _unique_attacks(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("attacks must not repeat")
        return v

    @field_validator("steps")
    @classmethod
    def _enough_steps(cls, v: int) -> int:
        if v < MIN_SUITE_STEPS:
            raise ValueError(
                f"the attack suite needs at least {MIN_SUITE_STEPS} iterations (the standard protocol runs "
                f"{SUITE_STEPS}); for a quick run use evaluate.pgd"
            )
        return v


class CertifiedEval(StrictModel):
    eps: list[PosFloat] = Field(min_length=1)

    @field_validator("eps")
    @classmethod
    def _unique_eps(cls, v: list[float]) -> list[float]:
        return bounded_unique(v, "eps")


#: the most noise draws per test sample and σ that CERTIFY's estimation (and PREDICT) may take: Cohen et al.
#: used 10⁵, which certifies up to 3.8σ at α = 10⁻³; the cost grows linearly in n, the largest radius like √log n
MAX_SMOOTHING_SAMPLES = 100_000


class SmoothingEval(StrictModel):
    """Randomized smoothing (Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via Randomized
    Smoothing", ICML 2019), for each σ: CERTIFY picks the class from ``n0`` noisy copies of each test point,
    counts it among ``n`` more, and certifies the smoothed classifier g in L2 within σ·Φ⁻¹(p_A) where p_A is the
    one-sided Clopper–Pearson lower bound at level ``alpha`` (abstains when p_A ≤ ½); PREDICT (binomial test at
    ``alpha``) gives g's clean accuracy. ``batch`` noisy copies go through the model per forward pass (default:
    ``evaluate.batch_size``; the draws do not depend on it) (``evaluation.smoothing``)."""

    sigmas: list[PosFloat] = Field(default_factory=lambda: [0.12, 0.25, 0.5], min_length=1)
    eps: list[PosFloat] = Field(min_length=1, description="radii ε (input units, L2) to report certified accuracy at")
    n: int = Field(
        10_000, ge=1, le=MAX_SMOOTHING_SAMPLES, description=f"estimation draws (at most {MAX_SMOOTHING_SAMPLES})"
    )
    n0: int = Field(100, ge=1, le=MAX_SMOOTHING_SAMPLES, description="selection draws; at most n")
    alpha: float = Field(0.001, gt=0.0, lt=1.0, allow_inf_nan=False, description="failure probability α ∈ (0, 1)")
    batch: int | None = Field(
        None, ge=1, le=MAX_SMOOTHING_SAMPLES, description="noisy copies per forward pass; default evaluate.batch_size"
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @field_validator("sigmas")
    @classmethod
    def _unique_sigmas(cls, v: list[float]) -> list[float]:
        return bounded_unique(v, "sigma")

    @field_validator("eps")
    @classmethod
    def _unique_eps(cls, v: list[float]) -> list[float]:
        return bounded_unique(v, "eps")

    @field_validator("n0")
    @classmethod
    def _n0_at_most_n(cls, v: int, info: ValidationInfo) -> int:
        n = info.data.get("n")
        if n is not None and v > n:
            raise ValueError(f"n0 ({v}) must not exceed n ({n}): selection takes fewer draws than estimation")
        return v


class PlugAndPlayEval(StrictModel):
    """Plug-and-play forward–backward reconstruction with the trained denoiser D (Murari, "The
    Plug-and-Play Method"): observe y = Kx + σ·N(0, I) (K a ``blur`` of the clean test image x; ``none``: K = I),
    then iterate x ← D_λ(x − α·Kᵀ(Kx − y)) from x₀ = Kᵀy with D_λ = (1 − λ)·id + λ·D (λ = ``relaxation``) and
    α = ``step_size`` (default 1/‖K‖₂²). With Lip(D) ≤ 1 and λ < 1, D_λ is λ-averaged; with α < 2/‖K‖₂² the
    gradient step is α‖K‖²/2-averaged, so the iteration is averaged and converges when it has a fixed point
    (Murari, "Convergence Theorem"). Reports ``pnp_psnr@σ`` and convergence diagnostics (``evaluation.pnp``)."""

    sigmas: list[NonNegFloat] = Field(default_factory=lambda: [0.0, 0.02, 0.05, 0.1], min_length=1)
    iterations: int = Field(50, ge=1, le=10_000)
    blur: Literal["motion", "gaussian", "none"] = Field(
        "motion", description="motion: horizontal 3-pixel box (Murari's motion blur); gaussian: 3×3, std 0.8"
    )
    step_size: PosFloat | None = Field(None, description="α; default 1/‖K‖₂²")
    relaxation: float = Field(0.5, gt=0.0, le=1.0, allow_inf_nan=False, description="λ of D_λ; < 1 for averagedness")
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @field_validator("sigmas")
    @classmethod
    def _unique_sigmas(cls, v: list[float]) -> list[float]:
        return bounded_unique(v, "sigma")


#: test samples per batch in every evaluation (``evaluate.batch_size``'s default)
EVAL_BATCH = 1000


class EvaluateSpec(StrictModel):
    added_fields: ClassVar[frozenset[str]] = frozenset({"smoothing", "batch_size"})

    gaussian: GaussianEval | None = Field(default_factory=GaussianEval)
    pgd: PGDEval | None = Field(None, description="PGD with the cross-entropy: the cheap named option")
    autoattack: AutoAttackEval | None = Field(
        None, description="classification only: the strong attack suite (Croce & Hein's standard protocol)"
    )
    certified: CertifiedEval | None = None
    smoothing: SmoothingEval | None = Field(
        None, description="classification only: randomized-smoothing certificates (Cohen et al., ICML 2019)"
    )
    plug_and_play: PlugAndPlayEval | None = Field(
        None, description="task 'denoising' on digits only: plug-and-play deblurring with the trained denoiser"
    )
    batch_size: int = Field(
        EVAL_BATCH,
        ge=1,
        le=100_000,
        description="test samples per batch in every evaluation (the clean pass, each Gaussian draw, every attack, "
        "plug-and-play): peak memory grows with it, not with n_test",
    )
