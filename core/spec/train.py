"""How a job trains: the train section of the spec, with its regularizers."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from core.spec.base import MAX_EPOCHS, MAX_SAMPLES, NonNegFloat, PosFloat, StrictModel

#: the optimizers ``train.optimizer`` names (evaluation.training.optim builds them)
OptimizerName = Literal["adam", "adamw", "sgd"]
#: learning-rate schedules (torch.optim.lr_scheduler), stepped after every optimizer step (batch)
ScheduleKind = Literal["cosine", "one_cycle", "step"]
LossName = Literal["cross_entropy", "multi_margin"]
AmpName = Literal["bf16", "fp16"]
#: OneCycleLR's default share of the steps spent rising (its ``pct_start``) when ``warmup_epochs`` is unset
ONE_CYCLE_WARMUP_SHARE = 0.3
MAX_LOADER_WORKERS = 32


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


class ScheduleSpec(StrictModel):
    """A learning-rate schedule (``torch.optim.lr_scheduler``), **stepped after every optimizer step** (every
    batch); sizes are given in epochs and turned into steps (× batches per epoch). ``train.lr`` is the peak rate.

    * ``cosine``: CosineAnnealingLR from ``lr`` down to ``min_lr`` over the steps after the warm-up;
    * ``one_cycle``: OneCycleLR: from lr/25 up to ``lr`` over ``warmup_epochs`` (default 30 % of training), then
      cosine down to ``min_lr`` (default lr/25/10⁴, torch's); it has its own warm-up, no LinearLR before it;
    * ``step``: StepLR: ×``gamma`` every ``step_size`` epochs (counted after the warm-up).

    With ``warmup_epochs`` > 0 (cosine, step) a LinearLR warm-up from ``warmup_start``·lr to ``lr`` comes first
    (SequentialLR). The warm-up must end before training does."""

    kind: ScheduleKind
    warmup_epochs: float | None = Field(
        None, ge=0.0, le=MAX_EPOCHS, allow_inf_nan=False,
        description="epochs of linear warm-up (may be fractional: whole batches); default 0, one_cycle: 30 %",
    )  # fmt: skip
    warmup_start: float = Field(
        0.1, gt=0.0, le=1.0, allow_inf_nan=False, description="cosine, step: the warm-up starts at this × lr"
    )
    min_lr: NonNegFloat | None = Field(None, description="cosine (default 0), one_cycle: the last learning rate")
    step_size: int | None = Field(None, ge=1, le=MAX_EPOCHS, description="step: epochs between two decays")
    gamma: float | None = Field(None, gt=0.0, lt=1.0, allow_inf_nan=False, description="step: decay factor (0.1)")

    @model_validator(mode="after")
    def _options_of_the_kind(self) -> ScheduleSpec:
        if self.kind == "step":
            if self.step_size is None:
                raise ValueError("train.schedule.step_size is required for kind 'step' (epochs between decays)")
            if self.min_lr is not None:
                raise ValueError("train.schedule.min_lr applies to kinds 'cosine' and 'one_cycle', not 'step'")
        else:
            for name in ("step_size", "gamma"):
                if getattr(self, name) is not None:
                    raise ValueError(f"train.schedule.{name} applies to kind 'step' only, not {self.kind!r}")
        if self.kind == "one_cycle" and "warmup_start" in self.model_fields_set:
            raise ValueError("train.schedule.warmup_start does not apply to kind 'one_cycle' (it rises from lr/25)")
        return self

    def warmup(self, epochs: int) -> float:
        """Epochs of warm-up for a training of ``epochs`` epochs."""
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        return ONE_CYCLE_WARMUP_SHARE * epochs if self.kind == "one_cycle" else 0.0


class MarginSpec(StrictModel):
    """The margin of ``train.loss: "multi_margin"``, exactly one of: ``eps``, a certified L2 radius to train
    for: margin = √2·ε·L with L the model's sound Lipschitz bound (``models.lipschitz_bound``, recomputed at the
    start of every epoch; a 1-Lipschitz model has L ≤ 1), the margin the certificate needs at radius ε; or
    ``logits``, the margin itself, in logit units (no bound needed; any family)."""

    eps: float | None = Field(None, gt=0.0, le=10.0, allow_inf_nan=False, description="certified radius to train for")
    logits: float | None = Field(None, gt=0.0, le=1e3, allow_inf_nan=False, description="margin in logit units")

    @model_validator(mode="after")
    def _exactly_one(self) -> MarginSpec:
        if (self.eps is None) == (self.logits is None):
            raise ValueError("train.margin takes exactly one of eps (margin √2·ε·L) and logits (the margin itself)")
        return self


class TrainSpec(StrictModel):
    added_fields: ClassVar[frozenset[str]] = frozenset(
        {"augment", "noise_sigma", "checkpoint_every", "momentum", "nesterov", "schedule", "clip_grad_norm",
         "label_smoothing", "loss", "margin", "amp", "loader_workers"}
    )  # fmt: skip

    epochs: int = Field(100, ge=1, le=MAX_EPOCHS)
    lr: PosFloat = 0.01
    optimizer: OptimizerName = Field(
        "adam", description="adam, adamw (decoupled weight decay) or sgd (with momentum, optionally Nesterov)"
    )
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
    checkpoint_every: int | None = Field(
        None,
        ge=1,
        le=MAX_EPOCHS,
        description="epochs between two training checkpoints a worker resumes from (and after the last epoch); "
        "default: max(1, epochs // 10). Only where checkpoints are kept (a worker's jobs, robustlab run --resume)",
    )
    momentum: float = Field(0.9, ge=0.0, lt=1.0, allow_inf_nan=False, description="sgd only: momentum")
    nesterov: bool = Field(False, description="sgd only: Nesterov momentum (needs momentum > 0)")
    schedule: ScheduleSpec | None = Field(None, description="learning-rate schedule, per batch (default: constant)")
    clip_grad_norm: PosFloat | None = Field(
        None, description="clip the gradient's global L2 norm to this before every step (default: no clipping)"
    )
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0, allow_inf_nan=False, description="classification, cross_entropy: label smoothing"
    )
    loss: LossName = Field(
        "cross_entropy",
        description="classification: cross_entropy, or multi_margin (the hinge of certified training, with "
        "train.margin); regression and denoising always train on the mean squared error",
    )
    margin: MarginSpec | None = Field(None, description="multi_margin only: {eps: ε} (√2·ε·L) or {logits: m}")
    amp: AmpName | None = Field(
        None,
        description="mixed precision on CUDA: bf16 or fp16 (with a gradient scaler) autocast of the training "
        "forward passes only; evaluation and certification stay full precision. device 'cpu': an error; 'auto' "
        "on a CPU worker: ignored, said in the result's warnings",
    )
    loader_workers: int = Field(
        0, ge=0, le=MAX_LOADER_WORKERS, description="DataLoader worker processes gathering batches (0: in-process)"
    )

    @model_validator(mode="after")
    def _options_fit_together(self) -> TrainSpec:
        if self.optimizer != "sgd":
            for name, default in (("momentum", 0.9), ("nesterov", False)):
                if getattr(self, name) != default:
                    raise ValueError(f"train.{name} applies to optimizer 'sgd' only, not {self.optimizer!r}")
        elif self.nesterov and self.momentum == 0.0:
            raise ValueError("train.nesterov needs train.momentum > 0")
        if self.schedule is not None:
            warmup = self.schedule.warmup(self.epochs)
            if warmup >= self.epochs:
                raise ValueError(
                    f"train.schedule.warmup_epochs = {warmup:g} is not shorter than training (train.epochs = "
                    f"{self.epochs}): the schedule would never leave its warm-up"
                )
            if self.schedule.min_lr is not None and self.schedule.min_lr >= self.lr:
                raise ValueError(
                    f"train.schedule.min_lr = {self.schedule.min_lr:g} must be below train.lr = {self.lr:g}"
                )
        if self.loss == "multi_margin":
            if self.margin is None:
                raise ValueError("train.margin is required with train.loss 'multi_margin': {eps: ε} or {logits: m}")
            if self.label_smoothing != 0.0:
                raise ValueError("train.label_smoothing applies to train.loss 'cross_entropy', not 'multi_margin'")
            if self.logit_scale != 1.0:
                raise ValueError("train.logit_scale applies to train.loss 'cross_entropy' (set the margin instead)")
        elif self.margin is not None:
            raise ValueError("train.margin applies to train.loss 'multi_margin' only")
        return self
