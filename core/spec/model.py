"""What network a job trains: the model section of the spec, one variant per family in a union on ``family``.

Every family has an input embedding → ``depth`` steps → a head, ``hidden`` units per step's function (default: its
state), an ``activation`` and optionally ``shared_weights``; the rest is the family's own. Adding a family: a
variant here (its ``family`` literal and options) listed in :data:`ModelSpecs`, plus its builder in
``models/families/`` and its facts in ``core/families.py``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from core.spec.base import (
    MAX_DEPTH,
    MAX_FEATURES,
    BackwardSolverName,
    ForwardSolverName,
    Legacy,
    PosFloat,
    StrictModel,
    Variant,
    close_union,
    variants_of,
)
from core.spec.image import (
    MAX_STAGES,
    Downsample,
    NormalizationSpec,
    StageSpec,
    check_input_shape,
    check_stages,
    image_of,
    stage_layout,
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
    Defaults follow Reshniak & Webster: TOL = 1e-5, at most 50 iterations. ``"auto"`` (opt-in, either side) picks
    fixed_point / neumann where the step is provably contractive, else anderson / gmres (``base.AUTO_SOLVER``)."""

    forward: ForwardSolverName = "anderson"
    backward: BackwardSolverName = "gmres"
    tol: PosFloat = 1e-5
    max_iter: int = Field(50, ge=1, le=10_000)
    backward_tol: PosFloat | None = None
    backward_max_iter: int | None = Field(None, ge=1, le=10_000)


WIDTH, H, CHANNELS, KERNEL_SIZE, DEPTH = 8, 0.1, 8, 3, 10  # defaults of options that several families share
THETA, T_FINAL = 0.5, 10.0  # θ-method default; the neural ODE's horizon (Reshniak & Webster, eq. 11: t ∈ [0, 10])


class ModelSpec(Variant):
    """A network: input embedding → ``depth`` steps → linear head. ``ModelSpec(**fields)`` /
    ``ModelSpec.model_validate(data)`` pick the family's variant by ``family``."""

    discriminator: ClassVar[str] = "family"

    family: str
    hidden: int | None = Field(None, ge=1, le=MAX_FEATURES)
    depth: int = Field(DEPTH, ge=1, le=MAX_DEPTH)
    activation: Literal["tanh", "relu", "softplus", "sigmoid"] = "tanh"
    shared_weights: bool = False
    input_dim: int | None = Field(None, ge=1, le=MAX_FEATURES, description="filled from the dataset when omitted")
    output_dim: int | None = Field(None, ge=1, le=MAX_FEATURES, description="filled from the dataset when omitted")
    input_shape: list[int] | None = Field(
        None, description="(C, H, W) of image inputs; filled from the dataset when omitted (image data only)"
    )
    added_fields: ClassVar[frozenset[str]] = frozenset({"input_shape"})

    @model_validator(mode="after")
    def _input_shape(self) -> ModelSpec:
        check_input_shape(self.input_shape, self.input_dim)
        return self

    def is_conv(self) -> bool:
        """Whether the state is channels × image (convolutional layers)."""
        return False

    def work_width(self) -> float:
        """√(multiply–adds per sample per step), coarsely."""
        raise NotImplementedError

    def step_count(self) -> int:
        """Residual steps of the network."""
        return self.depth

    def work(self) -> float:
        """Multiply–adds per sample through all steps, coarsely: work_width² × steps."""
        return self.work_width() ** 2 * self.step_count()


class _Dense(ModelSpec):
    """A family whose state has ``width`` numbers."""

    width: int = Field(WIDTH, ge=1, le=MAX_FEATURES)

    def work_width(self) -> float:
        return float(max(self.width, self.hidden or 0))


class _Convolvable(_Dense):
    """A family that is dense, or with ``conv`` convolutional. Without ``stages``: on square single-channel images
    (n² = input_dim; ``width`` unused) the state is ``channels`` × n × n and ``hidden`` counts the function's
    intermediate channels (default: ``channels``). With ``stages``: the image backbone of :mod:`core.spec.image` on
    C×H×W inputs (``channels``, ``depth`` and ``hidden`` then live in the stages)."""

    added_fields: ClassVar[frozenset[str]] = ModelSpec.added_fields | {
        "stages", "downsample", "normalization", "head"
    }  # fmt: skip
    conv: bool = Field(False, description="convolutional layers (with 'stages': the image backbone)")
    channels: int = Field(CHANNELS, ge=1, le=256, description="state channels of a conv model without stages")
    kernel_size: int = Field(KERNEL_SIZE, ge=1, le=7, description="odd kernel size of a conv model")
    stages: list[StageSpec] | None = Field(
        None,
        min_length=1,
        max_length=MAX_STAGES,
        description="conv only: the image backbone's stages, each {channels, depth, hidden}, downsampled between",
    )
    downsample: Downsample = Field("unshuffle", description="between stages: pixel-unshuffle ×2 or none")
    normalization: NormalizationSpec | Literal["dataset"] | None = Field(
        None, description="stages only: (x − mean)/std per channel inside the model; 'dataset': its statistics"
    )
    head: Literal["classifier", "image"] = Field(
        "classifier",
        description="stages only: 'classifier' = global pooling + linear head; 'image' = a 1×1 convolution back to "
        "the input's channels at full resolution (no downsampling): an image-to-image network (denoising)",
    )

    def is_conv(self) -> bool:
        return self.conv

    def image(self) -> tuple[int, int, int] | None:
        """(C, H, W) of the input when known."""
        return image_of(self.input_shape, self.input_dim)

    def layout(self) -> list[tuple[int, int, int, int]]:
        """(channels, hidden, pixels, depth) per stage of a conv model (one stage without ``stages``)."""
        if self.stages:
            return stage_layout(self.stages, self.downsample, self.image())
        pixels = self.input_dim or MAX_FEATURES
        return [(self.channels, self.hidden or self.channels, pixels, self.depth)]

    def work_width(self) -> float:
        """Dense: width; conv: √(channels·hidden·k²·pixels) of the widest stage, with pixels = MAX_FEATURES until
        the input size is known."""
        if not self.conv:
            return super().work_width()
        return max(math.sqrt(c * hid * self.kernel_size**2 * px) for c, hid, px, _ in self.layout())

    def step_count(self) -> int:
        return sum(stage.depth for stage in self.stages) if self.stages else self.depth

    def work(self) -> float:
        """The image backbone: Σ over stages of channels·hidden·k²·pixels·depth; otherwise work_width² × depth."""
        if not (self.conv and self.stages):
            return super().work()
        return float(sum(c * hid * self.kernel_size**2 * px * depth for c, hid, px, depth in self.layout()))

    @model_validator(mode="after")
    def _conv_fields(self) -> _Convolvable:
        # Checks compare with the defaults (not model_fields_set) so a dumped spec always validates again.
        if not self.conv:
            for name, default in (("channels", CHANNELS), ("kernel_size", KERNEL_SIZE)):
                if getattr(self, name) != default:
                    raise ValueError(f"model.{name} applies to conv models only (set model.conv = true)")
            for name, default in (
                ("stages", None), ("downsample", "unshuffle"), ("normalization", None), ("head", "classifier")
            ):  # fmt: skip
                if getattr(self, name) != default:
                    raise ValueError(f"model.{name} applies to conv models only (set model.conv = true)")
            return self
        if getattr(self, "spectral", None) is not None:
            raise ValueError("model.spectral is not available with model.conv (conv bounds use exact operator norms)")
        if self.width != WIDTH:
            raise ValueError("model.width does not apply to conv models (the state is channels × image)")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"model.kernel_size must be odd ('same' padding), got {self.kernel_size}")
        if self.stages:
            self._check_stages()
            return self
        for name, default in (("downsample", "unshuffle"), ("normalization", None), ("head", "classifier")):
            if getattr(self, name) != default:
                raise ValueError(f"model.{name} applies to the image backbone only (give model.stages)")
        if self.input_shape is not None and self.input_shape[0] != 1:
            raise ValueError(
                f"a conv model without model.stages takes single-channel images, not input_shape {self.input_shape} "
                "(give model.stages for the image backbone)"
            )
        if self.input_dim is not None and math.isqrt(self.input_dim) ** 2 != self.input_dim:
            raise ValueError(
                f"conv models need square single-channel images: input_dim {self.input_dim} is not a square"
            )
        return self

    def _check_stages(self) -> None:
        for name, default in (("channels", CHANNELS), ("depth", DEPTH), ("hidden", None)):
            if getattr(self, name) != default:
                raise ValueError(f"model.{name} does not apply with model.stages (each stage gives its own)")
        image = self.image()
        if image is None and self.input_dim is not None:
            raise ValueError(
                f"model.stages needs image inputs: input_dim {self.input_dim} is neither a square nor given an "
                "input_shape (C, H, W)"
            )
        check_stages(self.stages, self.downsample, image)
        if self.head == "image":
            if len(self.stages) > 1 and self.downsample != "none":
                raise ValueError(
                    "model.head 'image' returns an image of the input's size: no downsampling between stages "
                    f"(model.downsample 'none', not {self.downsample!r})"
                )
            if None not in (self.input_dim, self.output_dim) and self.output_dim != self.input_dim:
                raise ValueError(
                    f"model.head 'image' returns an image of the input's size: output_dim {self.output_dim} must be "
                    f"input_dim {self.input_dim}"
                )
        if isinstance(self.normalization, NormalizationSpec) and image is not None:
            if len(self.normalization.mean) != image[0]:
                raise ValueError(
                    f"model.normalization has {len(self.normalization.mean)} channels, the input has {image[0]}"
                )


class _Residual(_Convolvable):
    """y = x + h·(a step of F), F(x) = W₂σ(W₁x + b₁) + b₂ with ``hidden`` units (default: ``width``), or with
    ``conv`` a k×k convolutional lift to ``channels`` maps and F(x) = K₂⋆σ(K₁⋆x + b₁) + b₂ (Lipschitz bounds from
    the exact operator norms of the convolutions; ``spectral`` is not available with ``conv``)."""

    h: PosFloat = H
    spectral: SpectralSpec | None = None


def _solver() -> Any:
    return Field(default_factory=SolverSpec)


def _theta() -> Any:
    return Field(THETA, ge=0.0, le=1.0, allow_inf_nan=False, description="θ of the θ-method (default 0.5)")


def _none_is_default(default: float):
    """A before-validator: the old flat record's ``null`` meant this family's default."""
    return lambda value: default if value is None else value


# The old flat record's fields a family does not have (see core.spec.base.Variant), by the 422 they give.
_T_FINAL = Legacy(None, "model.t_final applies to family 'ode' only, not {variant!r}")
_THETA = Legacy(None, "model.theta applies to family 'implicit' only, not {variant!r}")
_SPECTRAL = Legacy(None, "model.spectral applies to families 'explicit'/'implicit' only, not {variant!r}")
# the old record took a solver for every family and used it only for θ-steps: still accepted (and unused) elsewhere
_SOLVER = Legacy(SolverSpec(), "", ignored=True)
_CONV = Legacy(False, "model.conv applies to families 'lipschitz', 'explicit', 'implicit' only, not {variant!r}")
_CHANNELS = Legacy(CHANNELS, "model.channels applies to conv models only (set model.conv = true)")
_KERNEL_SIZE = Legacy(KERNEL_SIZE, "model.kernel_size applies to conv models only (set model.conv = true)")
_NOT_CONV = {"conv": _CONV, "channels": _CHANNELS, "kernel_size": _KERNEL_SIZE}


class ExplicitSpec(_Residual):
    """y = x + h·F(x) (explicit Euler, a ResNet). ``theta`` may only say θ = 0."""

    legacy_flat = {"t_final": _T_FINAL, "solver": _SOLVER}
    family: Literal["explicit"]
    theta: float | None = Field(None, description="0 or omitted: explicit Euler is the θ-method with θ = 0")

    @field_validator("theta")
    @classmethod
    def _theta_zero(cls, value: float | None) -> float | None:
        if value not in (None, 0.0):
            raise ValueError("model.theta applies to family 'implicit' only (an explicit ResNet is θ = 0)")
        return value


class ImplicitSpec(_Residual):
    """y = x + h[(1−θ)F(x) + θF(y)] (θ-method, Reshniak & Webster), solved by ``solver``."""

    legacy_flat = {"t_final": _T_FINAL}
    family: Literal["implicit"]
    theta: float = _theta()
    solver: SolverSpec = _solver()
    _theta_default = field_validator("theta", mode="before")(_none_is_default(THETA))


class OdeSpec(ModelSpec):
    """The neural ODE of Reshniak & Webster (eq. 11), ẏ = γ₂σ(γ₁y + b₁) on t ∈ [0, ``t_final``] from the augmented
    y(0) = (x, x) (state 2·input_dim), γ₁, γ₂ normalised by the spectral radius of γ₂γ₁ at initialisation, b₁ = 0,
    ``hidden`` units (default 100), discretised by ``depth`` θ-steps of size h = t_final/depth, ``theta`` and
    ``solver`` as for ``implicit``."""

    legacy_flat = {
        "width": Legacy(WIDTH, "model.width does not apply to family 'ode' (the state is (x, x): 2·input_dim)"),
        "h": Legacy(H, "model.h does not apply to family 'ode' (the step is t_final/depth)"),
        "spectral": Legacy(
            None,
            "model.spectral does not apply to family 'ode' (Reshniak & Webster normalises γ₁, γ₂ by the spectral "
            "radius of γ₂γ₁ at initialisation)",
        ),
        **_NOT_CONV,
    }
    family: Literal["ode"]
    theta: float = _theta()
    t_final: PosFloat = Field(T_FINAL, description="the time horizon T (default 10, Reshniak & Webster); step T/depth")
    solver: SolverSpec = _solver()
    _theta_default = field_validator("theta", mode="before")(_none_is_default(THETA))
    _t_final_default = field_validator("t_final", mode="before")(_none_is_default(T_FINAL))

    @model_validator(mode="after")
    def _state_fits(self) -> OdeSpec:
        if self.input_dim is not None and 2 * self.input_dim > MAX_FEATURES:
            raise ValueError(f"family 'ode' needs 2·input_dim ≤ {MAX_FEATURES}, got input_dim {self.input_dim}")
        return self

    def work_width(self) -> float:
        return float(max(2 * (self.input_dim or 1), self.hidden or 100))


class HamiltonianSpec(_Convolvable):
    """Symplectic Euler steps on x = (q, p) (Murari): p ← p − h∇U(q), q ← q + h∇K(p), ∇K(p) = Aᵀdiag(u)σ(Ap + a)
    with ``hidden`` units; ``width`` = 2·dim(q) must be even. With ``conv`` (``stages`` required) A is a
    convolution and q, p are the two halves of each stage's (even) ``channels``."""

    legacy_flat = {"theta": _THETA, "t_final": _T_FINAL, "spectral": _SPECTRAL, "solver": _SOLVER}
    family: Literal["hamiltonian"]
    h: PosFloat = H

    @field_validator("width")
    @classmethod
    def _even(cls, width: int) -> int:
        if width % 2:
            raise ValueError(f"model.width must be even for family 'hamiltonian' (state (q, p)), got {width}")
        return width

    @model_validator(mode="after")
    def _conv_needs_stages(self) -> HamiltonianSpec:
        if self.conv and not self.stages:
            raise ValueError("family 'hamiltonian' is convolutional only in the image backbone: give model.stages")
        for stage in self.stages or []:
            if stage.channels % 2:
                raise ValueError(
                    f"model.stages: family 'hamiltonian' splits channels into (q, p): {stage.channels} is odd"
                )
        return self


class LipschitzSpec(_Convolvable):
    """1-Lipschitz gradient-flow steps x ← x − τWᵀσ(Wx + b), τ ∈ [0, 2/‖W‖²] learned per layer (Murari), between a
    spectrally normalised embedding and head; with ``conv`` W is a ``kernel_size`` convolution."""

    legacy_flat = {
        "h": Legacy(H, "model.h does not apply to family 'lipschitz' (each layer learns τ ∈ [0, 2/‖W‖²])"),
        "theta": _THETA,
        "t_final": _T_FINAL,
        "spectral": _SPECTRAL,
        "solver": _SOLVER,
    }
    family: Literal["lipschitz"]


class SllSpec(_Dense):
    """SDP-based Lipschitz layers x ← x − 2WᵀT⁻¹σ(Wx + b), T = diag(Σ_j |WWᵀ|_ij q_j/q_i), q > 0 learned (Araujo,
    Havens, Delattre, Allauzen & Hu, ICLR 2023), between a spectrally normalised embedding and head: 1-Lipschitz
    like ``lipschitz`` with a learned diagonal step instead of one τ per layer (dense; ``hidden`` units per layer,
    default ``width``)."""

    family: Literal["sll"]


#: The model section's type: the union of the family variants on ``family``.
ModelSpecs = close_union(ModelSpec, ExplicitSpec, ImplicitSpec, OdeSpec, HamiltonianSpec, LipschitzSpec, SllSpec)
#: ``{family: variant}`` of every family.
MODEL_VARIANTS: dict[str, type[ModelSpec]] = variants_of(ModelSpecs)
