"""What network a job trains: the model section of the spec."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from core.spec.base import (
    MAX_DEPTH,
    MAX_FEATURES,
    BackwardSolverName,
    ForwardSolverName,
    PosFloat,
    StrictModel,
)


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
