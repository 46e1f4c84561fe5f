"""How a job trains: the train section of the spec, with its regularizers."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from core.spec.base import MAX_EPOCHS, MAX_SAMPLES, NonNegFloat, PosFloat, StrictModel


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


class AugmentSpec(StrictModel):
    """Standard image augmentation (image datasets only), drawn anew for every training batch by the training
    seed's generator: a random crop of the image zero-padded by ``crop_padding`` pixels on each side, and a
    horizontal flip of each image with probability ½. ``{"crop_padding": 4, "flip": true}`` is the usual CIFAR
    recipe (He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", 2016, §4.2)."""

    crop_padding: int = Field(0, ge=0, le=16, description="pixels of zero padding; the crop is the image's size")
    flip: bool = Field(False, description="mirror each image left-right with probability 1/2")


class TrainSpec(StrictModel):
    added_fields: ClassVar[frozenset[str]] = frozenset({"augment", "noise_sigma"})

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
    augment: AugmentSpec | None = Field(
        None, description="image datasets only: random crops and flips of every training batch (default: none)"
    )
    noise_sigma: NonNegFloat = Field(
        0.0,
        description="Gaussian data augmentation: train on x + noise_sigma·N(0, I), drawn anew for every batch (after "
        "any crop and flip), as Cohen et al. train the base models of randomized smoothing (0: off). Not R_rnd, "
        "which perturbs the inputs to penalise the growth of the hidden states (regularizers.stochastic)",
    )
