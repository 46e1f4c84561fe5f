"""The job spec: one pydantic v2 schema shared by the API, the worker and the CLI.

A spec says what to train (or load), on which data, and how to evaluate it::

    {
      "name": "spirals-implicit-theta0.5",
      "dataset": {"name": "spirals", "n_train": 100, "n_test": 100, "seed": 0},
      "model": {"family": "implicit", "width": 8, "depth": 10, "h": 0.5, "theta": 0.5},
      "train": {"epochs": 200, "lr": 0.01},
      "evaluate": {"gaussian": {"sigmas": [0.0, 0.1, 0.2]},
                   "pgd": {"norm": ["Linf", "L2"], "eps": [0.05, 0.1]},
                   "certified": {"eps": [0.05, 0.1]}}
    }

Every model rejects unknown fields (``extra="forbid"``), so a typo is a 422 naming the field, never a silently
ignored option, and takes no loose types (``strict``: ``"width": true`` or ``"epochs": "10"`` is an error).
Bounds on sizes keep one job from exhausting a worker.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_FEATURES = 4096
MAX_DEPTH = 1000
MAX_SAMPLES = 1_000_000
MAX_EPOCHS = 100_000
MAX_LIST = 64
DIGITS_IMAGES = 1797  # scikit-learn's bundled 8×8 digits
# width² · depth · epochs · n_train: a coarse budget on the work one job may ask for (≈ flops / few).
MAX_WORK = 5e15

NonNegFloat = Annotated[float, Field(ge=0.0, le=1e3, allow_inf_nan=False)]
PosFloat = Annotated[float, Field(gt=0.0, le=1e3, allow_inf_nan=False)]
# Names of the solver registries in models.solvers (a test keeps the two in step; the spec stays torch-free).
ForwardSolverName = Literal["fixed_point", "anderson", "gradient_descent", "ncg_fr", "ncg_pr"]
BackwardSolverName = Literal["gmres", "neumann", "fixed_point"]


class StrictModel(BaseModel):
    """Unknown fields and loose types are errors: ``strict`` takes no ``true`` for a number and no ``"10"`` for
    one (an integer is still a valid float; a float is no integer)."""

    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False, strict=True)


# ---------------------------------------------------------------------------------------------------- dataset
class MaskSpec(StrictModel):
    """Missing pixels of ``digits_completion`` (set to 0 in the input): ``block`` = one square of about
    ``fraction`` of the image at a random position per image; ``pixels`` = that fraction of pixels at random."""

    kind: Literal["block", "pixels"] = "block"
    fraction: float = Field(0.25, gt=0.0, lt=1.0, allow_inf_nan=False)


# Every dataset has one task; JobSpec.task defaults to it (and must agree with it when given).
DATASET_TASKS: dict[str, str] = {
    "spirals": "classification",
    "digits": "classification",
    "upload": "classification",
    "sine": "regression",
    "lotka_volterra": "regression",
    "digits_denoising": "denoising",
    "digits_completion": "denoising",
}
TaskName = Literal["classification", "regression", "denoising"]


class DatasetSpec(StrictModel):
    """Which data. ``spirals`` is the two-spirals problem of Haber & Ruthotto used in Reshniak & Webster (200 points,
    every other point held out); ``digits`` is scikit-learn's bundled 8×8 UCI digits; ``upload`` is a user's
    ``.npz`` named by ``artifact`` (the first ``n_train`` / ``n_test`` rows of its splits).

    Regression (Reshniak & Webster, 001): ``sine`` fits sin x + 0.1·cos 19x on [−5, 5] from ``n_train`` equally spaced
    points (the seed: 51; test: the ``n_test`` cell midpoints); ``lotka_volterra`` learns the Δt = 0.2 flow map
    z_k ↦ z_{k+1} of ż₁ = 2/3·z₁ − 4/3·z₁z₂, ż₂ = z₁z₂ − z₂ from 50-step trajectories (n_train, n_test count pairs).
    For both, ``noise`` is Gaussian noise on the training targets.
    Denoising (Reshniak; inputs and targets in [0, 1]): ``digits_denoising`` maps clean + ``noise``·N(0, I)
    (clipped; ``noise`` = σ_train, required > 0) to the clean digit; ``digits_completion`` maps a digit with the
    ``mask``'s pixels set to 0 (plus optional ``noise``) to the clean digit."""

    name: Literal["spirals", "digits", "sine", "lotka_volterra", "digits_denoising", "digits_completion", "upload"]
    n_train: int = Field(100, ge=2, le=MAX_SAMPLES)
    n_test: int = Field(100, ge=1, le=MAX_SAMPLES)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    noise: NonNegFloat = 0.0
    scale: PosFloat = Field(
        1.0,
        description="spirals only: multiply the coordinates (points in [-scale, scale]²). 4 puts the Gaussian-noise "
        "levels σ = 0…0.5 of Reshniak & Webster's poster on the scale of its table (examples/spirals-theta-sweep.json)",
    )
    artifact: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="name 'upload' only: 'artifact:<id>' of a dataset uploaded to POST /api/v1/artifacts/datasets "
        "(resolved by the worker), or the path of a local .npz (x_train, y_train, x_test, y_test)",
    )
    mask: MaskSpec | None = Field(
        None, description="digits_completion only: the missing pixels (default: a block of 1/4 of the image)"
    )

    @model_validator(mode="after")
    def _artifact_iff_upload(self) -> DatasetSpec:
        if self.name == "upload" and self.artifact is None:
            raise ValueError("dataset.artifact is required for dataset 'upload' ('artifact:<id>' or a .npz path)")
        if self.name != "upload" and self.artifact is not None:
            raise ValueError(f"dataset.artifact applies to dataset 'upload' only, not {self.name!r}")
        if self.name != "spirals" and self.scale != 1.0:
            raise ValueError(f"dataset.scale applies to dataset 'spirals' only, not {self.name!r}")
        if self.name == "digits_completion" and self.mask is None:
            self.mask = MaskSpec()
        if self.name != "digits_completion" and self.mask is not None:
            raise ValueError(f"dataset.mask applies to dataset 'digits_completion' only, not {self.name!r}")
        if self.name == "digits_denoising" and self.noise == 0:
            raise ValueError("dataset.noise is the input corruption σ_train of 'digits_denoising': give one > 0")
        if self.name in ("digits_denoising", "digits_completion") and self.n_train + self.n_test > DIGITS_IMAGES:
            raise ValueError(f"{self.name} has {DIGITS_IMAGES} images; n_train + n_test = {self.n_train + self.n_test}")
        return self


# ---------------------------------------------------------------------------------------------------- model
class SpectralSpec(StrictModel):
    """Eigenvalue placement of Reshniak & Webster's poster: F^{α,β}(x) = (α+β)/2·x + (β−α)/2·S(ϑ)⊙F̃(x), F̃ spectrally
    normalised, so the spectrum of ∂F lies in the disc centred at (α+β)/2 with radius (β−α)/2."""

    lower: float = Field(-1.0, ge=-100.0, le=100.0, allow_inf_nan=False)
    upper: float = Field(1.0, ge=-100.0, le=100.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> SpectralSpec:
        if self.upper < self.lower:
            raise ValueError(f"spectral.upper ({self.upper}) must be ≥ spectral.lower ({self.lower})")
        return self


class SolverSpec(StrictModel):
    """Forward (nonlinear) and backward (linear, implicit differentiation) solvers of an implicit layer.
    Defaults follow Reshniak & Webster: TOL = 1e-5, at most 50 iterations."""

    forward: ForwardSolverName = "anderson"
    backward: BackwardSolverName = "gmres"
    tol: PosFloat = 1e-5
    max_iter: int = Field(50, ge=1, le=10_000)
    backward_tol: PosFloat | None = None
    backward_max_iter: int | None = Field(None, ge=1, le=10_000)


class ModelSpec(StrictModel):
    """A residual network: input embedding → ``depth`` residual steps of step size ``h`` → linear head.

    ``family="explicit"``: y = x + h·F(x) (explicit Euler, a ResNet).
    ``family="implicit"``: y = x + h[(1−θ)F(x) + θF(y)] (θ-method, Reshniak & Webster).
    F(x) = W₂σ(W₁x + b₁) + b₂ with ``hidden`` units (default: ``width``).
    ``family="hamiltonian"``: symplectic Euler steps on x = (q, p) (Murari): p ← p − h∇U(q), q ← q + h∇K(p),
    ∇K(p) = Aᵀdiag(u)σ(Ap + a) with ``hidden`` units; ``width`` = 2·dim(q) must be even.
    ``family="lipschitz"``: 1-Lipschitz gradient-flow steps x ← x − τWᵀσ(Wx + b), τ ∈ [0, 2/‖W‖²] learned per
    layer (Murari; ``h`` unused), between a spectrally normalised embedding and head. With ``conv=True`` the
    state is ``channels`` × n × n (square single-channel images, n² = input_dim; ``width`` unused), W is a
    ``kernel_size`` convolution and ``hidden`` counts its output channels (default: ``channels``).
    ``conv=True`` with ``family="explicit"``/``"implicit"``: a k×k convolutional lift to ``channels`` maps, then
    F(x) = K₂⋆σ(K₁⋆x + b₁) + b₂ (``hidden`` intermediate channels) on the ``channels`` × n × n state; Lipschitz
    bounds from the exact operator norms of the convolutions (``spectral`` is not available with ``conv``).
    ``family="ode"``: the neural ODE of Reshniak & Webster (eq. 11), ẏ = γ₂σ(γ₁y + b₁) on t ∈ [0, ``t_final``] from the
    augmented y(0) = (x, x) (state 2·input_dim; ``width`` unused), γ₁, γ₂ normalised by the spectral radius of
    γ₂γ₁ at initialisation, b₁ = 0, ``hidden`` units (default 100), discretised by ``depth`` θ-steps of size
    h = t_final/depth (``h`` unused), ``theta`` (default 0.5) and ``solver`` as for ``implicit``.
    Fields a family does not use must keep their defaults (a non-default value is an error, not ignored).
    """

    family: Literal["explicit", "implicit", "ode", "hamiltonian", "lipschitz"]
    width: int = Field(8, ge=1, le=MAX_FEATURES)
    hidden: int | None = Field(None, ge=1, le=MAX_FEATURES)
    depth: int = Field(10, ge=1, le=MAX_DEPTH)
    h: PosFloat = 0.1
    theta: float | None = Field(
        None, ge=0.0, le=1.0, allow_inf_nan=False, description="families 'implicit' and 'ode' only; default 0.5"
    )
    t_final: PosFloat | None = Field(
        None, description="family 'ode' only: the time horizon T (default 10, Reshniak & Webster); the step is T/depth"
    )
    activation: Literal["tanh", "relu", "softplus", "sigmoid"] = "tanh"
    shared_weights: bool = False
    spectral: SpectralSpec | None = None
    solver: SolverSpec = Field(default_factory=SolverSpec)
    input_dim: int | None = Field(None, ge=1, le=MAX_FEATURES, description="filled from the dataset when omitted")
    output_dim: int | None = Field(None, ge=1, le=MAX_FEATURES, description="filled from the dataset when omitted")
    conv: bool = Field(
        False,
        description="convolutional layers on square single-channel images: gradient-flow layers (family "
        "'lipschitz') or a conv residual function (families 'explicit', 'implicit')",
    )
    channels: int = Field(8, ge=1, le=256, description="state channels of a conv model")
    kernel_size: int = Field(3, ge=1, le=7, description="odd kernel size of a conv model")

    @model_validator(mode="after")
    def _theta_only_for_implicit(self) -> ModelSpec:
        if self.family in ("implicit", "ode") and self.theta is None:
            self.theta = 0.5
        if self.family == "ode" and self.t_final is None:
            self.t_final = 10.0  # Reshniak & Webster, eq. 11: t ∈ [0, 10]
        if self.family != "ode" and self.t_final is not None:
            raise ValueError(f"model.t_final applies to family 'ode' only, not {self.family!r}")
        if self.family == "explicit" and self.theta not in (None, 0.0):
            raise ValueError("model.theta applies to family 'implicit' only (an explicit ResNet is θ = 0)")
        return self

    @model_validator(mode="after")
    def _fields_of_the_new_families(self) -> ModelSpec:
        # Checks compare with the defaults (not model_fields_set) so a dumped spec always validates again.
        defaults = ModelSpec.model_fields
        family = self.family
        if family in ("hamiltonian", "lipschitz"):
            if self.theta is not None:
                raise ValueError(f"model.theta applies to family 'implicit' only, not {family!r}")
            if self.spectral is not None:
                raise ValueError(f"model.spectral applies to families 'explicit'/'implicit' only, not {family!r}")
        if family == "hamiltonian" and self.width % 2:
            raise ValueError(f"model.width must be even for family 'hamiltonian' (state (q, p)), got {self.width}")
        if family == "lipschitz" and self.h != defaults["h"].default:
            raise ValueError("model.h does not apply to family 'lipschitz' (each layer learns τ ∈ [0, 2/‖W‖²])")
        if family == "ode":
            if self.spectral is not None:
                raise ValueError(
                    "model.spectral does not apply to family 'ode' (Reshniak & Webster normalises γ₁, γ₂ by "
                    "the spectral radius of γ₂γ₁ at initialisation)"
                )
            if self.h != defaults["h"].default:
                raise ValueError("model.h does not apply to family 'ode' (the step is t_final/depth)")
            if self.width != defaults["width"].default:
                raise ValueError("model.width does not apply to family 'ode' (the state is (x, x): 2·input_dim)")
            if self.input_dim is not None and 2 * self.input_dim > MAX_FEATURES:
                raise ValueError(f"family 'ode' needs 2·input_dim ≤ {MAX_FEATURES}, got input_dim {self.input_dim}")
        if self.conv and family not in ("lipschitz", "explicit", "implicit"):
            raise ValueError(f"model.conv applies to families 'lipschitz', 'explicit', 'implicit' only, not {family!r}")
        if self.conv and self.spectral is not None:
            raise ValueError("model.spectral is not available with model.conv (conv bounds use exact operator norms)")
        if not self.conv:
            for name in ("channels", "kernel_size"):
                if getattr(self, name) != defaults[name].default:
                    raise ValueError(f"model.{name} applies to conv models only (set model.conv = true)")
        else:
            if self.width != defaults["width"].default:
                raise ValueError("model.width does not apply to conv models (the state is channels × image)")
            if self.kernel_size % 2 == 0:
                raise ValueError(f"model.kernel_size must be odd ('same' padding), got {self.kernel_size}")
            if self.input_dim is not None and math.isqrt(self.input_dim) ** 2 != self.input_dim:
                raise ValueError(
                    f"conv models need square single-channel images: input_dim {self.input_dim} is not a square"
                )
        return self

    def work_width(self) -> float:
        """√(multiply–adds per sample per step), coarsely: width for dense models; for conv models
        √(channels·hidden·k²·pixels), with pixels = MAX_FEATURES until input_dim is known."""
        if self.family == "ode":
            return float(max(2 * (self.input_dim or 1), self.hidden or 100))
        if not self.conv:
            return float(max(self.width, self.hidden or 0))
        pixels = self.input_dim or MAX_FEATURES
        return math.sqrt(self.channels * (self.hidden or self.channels) * self.kernel_size**2 * pixels)


# ---------------------------------------------------------------------------------------------------- train
class StochasticRegularizer(StrictModel):
    """R_rnd of Reshniak & Webster (eq. 10): Σ_t (t/T)^power Σ_p ‖y_t − ỹ_t^(p)‖ over ``streams`` perturbation streams,
    the network's states on the inputs plus Gaussian noise of std ``sigma``, drawn anew for every batch."""

    sigma: PosFloat = 0.05
    weight: NonNegFloat = 1.0
    streams: int = Field(1, ge=1, le=64, description="P: perturbed copies of each batch (one batched forward)")
    power: NonNegFloat = Field(
        1.0, le=100.0, description="r of β_t = (t/T)^r: smaller r weights early layers more (faster damping)"
    )


class WeightedRegularizer(StrictModel):
    """A named regularizer of ``models.regularizers``: the training loss gets ``weight`` × its value, and the
    value is logged (``reg_<name>``). A bare number is shorthand for ``{"weight": number}``."""

    weight: NonNegFloat = 1.0

    @model_validator(mode="before")
    @classmethod
    def _number_is_the_weight(cls, data):
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return {"weight": data}
        return data

    def options(self) -> dict:
        """The keyword options of the regularizer function (everything but ``weight``)."""
        return self.model_dump(exclude={"weight"})


class FixedPointRegularizer(WeightedRegularizer):
    """R_fp = Σ_t Σ_{k=1}^K (k/K)^p ‖r(y_t^k)‖ over the Picard iterates of each θ-step (Reshniak & Webster, eq. 9);
    families 'implicit' and 'ode'."""

    power: float = Field(1.0, ge=0.0, le=10.0, allow_inf_nan=False, description="p")
    iterations: int = Field(10, ge=1, le=100, description="K, recorded fixed-point iterations per step")


class DivergenceRegularizer(WeightedRegularizer):
    """1/(dT) Σ_t (t/T)^p ∇·F_t(y_t) by Hutchinson's estimator (Reshniak & Webster's poster, "Trajectory
    regularization")."""

    power: float = Field(1.0, ge=0.0, le=10.0, allow_inf_nan=False, description="p")
    samples: int = Field(1, ge=1, le=16, description="Hutchinson probes per point")


class TotalVariationRegularizer(WeightedRegularizer):
    """1/T Σ_t ‖γ_t − γ_{t−1}‖² over the weights of consecutive steps (Reshniak & Webster's poster, "Trajectory
    regularization")."""


class FieldNormRegularizer(WeightedRegularizer):
    """R_F = Σ_t ‖F_t(y_{t−1})‖², the vector field on the data (Reshniak, eq. 7)."""


class StabilityTraceRegularizer(WeightedRegularizer):
    """R_λ = Σ_t Tr(R_tᵀR_t), R_t = R_θ(hDF) the step's Jacobian, by Hutchinson's estimator (Reshniak, eq. 8)."""

    samples: int = Field(1, ge=1, le=16, description="Hutchinson probes per point")
    iterations: int = Field(50, ge=1, le=500, description="most Neumann iterations for (I − hθJ)ᵀw = v")
    tol: PosFloat = Field(1e-6, description="relative tolerance of the Neumann iteration")


class NormalRegularizer(WeightedRegularizer):
    """R_n = Σ_t ‖(θ-step from x + αn̂) − x‖², n̂ ∥ ∇‖F(x + ε)‖² the normal of the data manifold (Reshniak,
    eq. 9)."""

    alpha: PosFloat = Field(0.1, description="α, the distance of the perturbed point")
    noise: PosFloat = Field(0.01, description="standard deviation of ε")


# regularizers that evaluate the residual function F of each step (families with one)
FIELD_REGULARIZERS = ("fixed_point", "divergence", "field_norm", "stability_trace", "normal")


class RegularizersSpec(StrictModel):
    """``stochastic`` is R_rnd (Reshniak & Webster, eq. 10); the others are the named functions of
    ``models.regularizers``, each ``{"weight": w, …options}`` or just ``w``. R_adj (Reshniak, eq. 10) is not offered."""

    stochastic: StochasticRegularizer | None = None
    fixed_point: FixedPointRegularizer | None = None
    divergence: DivergenceRegularizer | None = None
    total_variation: TotalVariationRegularizer | None = None
    field_norm: FieldNormRegularizer | None = None
    stability_trace: StabilityTraceRegularizer | None = None
    normal: NormalRegularizer | None = None

    def named(self) -> dict[str, WeightedRegularizer]:
        """The set regularizers other than ``stochastic``, by name."""
        return {
            name: value
            for name in type(self).model_fields
            if name != "stochastic" and (value := getattr(self, name)) is not None
        }


class TrainSpec(StrictModel):
    epochs: int = Field(100, ge=1, le=MAX_EPOCHS)
    lr: PosFloat = 0.01
    optimizer: Literal["adam", "sgd"] = "adam"
    batch_size: int | None = Field(None, ge=1, le=MAX_SAMPLES)
    weight_decay: NonNegFloat = 0.0
    seed: int = Field(0, ge=0, le=2**31 - 1)
    regularizers: RegularizersSpec = Field(default_factory=RegularizersSpec)
    logit_scale: PosFloat = Field(
        1.0,
        description="train on cross-entropy of logit_scale·logits (evaluation is unaffected). A 1-Lipschitz model "
        "has small logit gaps, so plain cross-entropy saturates at a poor optimum; a scale ≫ 1 lets it fit (Murari)",
    )


# ---------------------------------------------------------------------------------------------------- evaluate
def _bounded_unique(values: list[float], what: str) -> list[float]:
    if len(values) > MAX_LIST:
        raise ValueError(f"at most {MAX_LIST} {what} values")
    return sorted(set(values))


class GaussianEval(StrictModel):
    sigmas: list[NonNegFloat] = Field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4, 0.5], min_length=1)
    repeats: int = Field(10, ge=1, le=1000)
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @field_validator("sigmas")
    @classmethod
    def _unique_sigmas(cls, v: list[float]) -> list[float]:
        return _bounded_unique(v, "sigma")


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
        return _bounded_unique(v, "eps")


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
        return _bounded_unique(v, "eps")


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
        return _bounded_unique(v, "sigma")


class EvaluateSpec(StrictModel):
    gaussian: GaussianEval | None = Field(default_factory=GaussianEval)
    pgd: PGDEval | None = Field(None, description="PGD with the cross-entropy: the cheap named option")
    autoattack: AutoAttackEval | None = Field(
        None, description="classification only: the strong attack suite (Croce & Hein's standard protocol)"
    )
    certified: CertifiedEval | None = None
    plug_and_play: PlugAndPlayEval | None = Field(
        None, description="task 'denoising' on digits only: plug-and-play deblurring with the trained denoiser"
    )


# ---------------------------------------------------------------------------------------------------- job
class JobSpec(StrictModel):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@+=-]*$")
    task: TaskName | None = Field(
        None,
        description="classification (spirals, digits, upload), regression (sine, lotka_volterra) or denoising "
        "(digits_denoising, digits_completion); default: the dataset's task, and it must agree with it",
    )
    dataset: DatasetSpec
    model: ModelSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    checkpoint: str | None = Field(
        None,
        max_length=500,
        description="weights to load instead of training: a directory written by `robustlab run --out`, a "
        ".safetensors file, or 'artifact:<id>' of a checkpoint uploaded to POST /api/v1/artifacts/checkpoints",
    )
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _task_of_the_dataset(self) -> JobSpec:
        expected = DATASET_TASKS[self.dataset.name]
        if self.task is None:
            self.task = expected
        elif self.task != expected:
            raise ValueError(f"task {self.task!r} does not match dataset {self.dataset.name!r} (a {expected} dataset)")
        if self.task != "classification" and self.train.logit_scale != 1.0:
            raise ValueError("train.logit_scale applies to task 'classification' only (regression trains on MSE)")
        if self.evaluate.autoattack is not None and self.task != "classification":
            raise ValueError("evaluate.autoattack needs task 'classification' (its attacks flip class labels)")
        if self.evaluate.plug_and_play is not None and self.task != "denoising":
            raise ValueError("evaluate.plug_and_play needs task 'denoising' (a trained image denoiser)")
        return self

    @model_validator(mode="after")
    def _regularizers_fit_the_family(self) -> JobSpec:
        family, named = self.model.family, self.train.regularizers.named()
        if "fixed_point" in named and family not in ("implicit", "ode"):
            raise ValueError(
                f"train.regularizers.fixed_point needs θ-steps (families 'implicit', 'ode'), not {family!r}"
            )
        for name in FIELD_REGULARIZERS:
            if name in named and family not in ("explicit", "implicit", "ode"):
                raise ValueError(
                    f"train.regularizers.{name} needs steps with a residual function F (families 'explicit', "
                    f"'implicit', 'ode'), not {family!r}"
                )
        return self

    @model_validator(mode="after")
    def _work_budget(self) -> JobSpec:
        width = self.model.work_width()
        work = width**2 * self.model.depth * self.train.epochs * self.dataset.n_train
        if work > MAX_WORK:
            raise ValueError(
                f"job too large: width²·depth·epochs·n_train = {work:.3g} exceeds the limit {MAX_WORK:.3g}"
            )
        return self

    def canonical_json(self) -> str:
        """The spec with all defaults filled in, keys sorted: the input of :meth:`spec_hash`."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def spec_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def queue(self) -> str:
        """Celery queue for this job: ``gpu`` when it asks for CUDA, ``cpu`` otherwise."""
        return "gpu" if self.device == "cuda" else "cpu"
