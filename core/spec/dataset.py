"""Which data a job uses: the dataset section of the spec, one variant per dataset in a union on ``name``.

Each variant declares its task; ``DATASET_TASKS`` is read from them. Adding a dataset: a variant here (its ``name``
literal, ``task`` and own options) listed in :data:`DatasetSpecs`, plus its loader in ``evaluation/datasets/``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from core.datasets import IMAGE_DATASETS
from core.spec.base import (
    DIGITS_IMAGES,
    MAX_SAMPLES,
    Legacy,
    NonNegFloat,
    PosFloat,
    StrictModel,
    Variant,
    close_union,
    variants_of,
)

TaskName = Literal["classification", "regression", "denoising"]


class MaskSpec(StrictModel):
    """Missing pixels of ``digits_completion`` (set to 0 in the input): ``block`` = one square of about
    ``fraction`` of the image at a random position per image; ``pixels`` = that fraction of pixels at random."""

    kind: Literal["block", "pixels"] = "block"
    fraction: float = Field(0.25, gt=0.0, lt=1.0, allow_inf_nan=False)


class DatasetSpec(Variant):
    """Which data: what every dataset shares. ``DatasetSpec(**fields)`` / ``DatasetSpec.model_validate(data)`` pick
    the variant by ``name``. ``noise``: Gaussian noise on the training data (each dataset says where)."""

    discriminator: ClassVar[str] = "name"
    #: The task of every job on this dataset (JobSpec.task defaults to it and must agree with it).
    task: ClassVar[TaskName]

    name: str
    n_train: int = Field(100, ge=2, le=MAX_SAMPLES)
    n_test: int = Field(100, ge=1, le=MAX_SAMPLES)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    noise: NonNegFloat = 0.0


def _legacy(*, scale: bool = True, artifact: bool = True, mask: bool = True) -> dict[str, Legacy]:
    """The old flat record's options a dataset does not have (see :class:`~core.spec.base.Variant`)."""
    out = {}
    if scale:
        out["scale"] = Legacy(1.0, "dataset.scale applies to dataset 'spirals' only, not {variant!r}")
    if artifact:
        out["artifact"] = Legacy(None, "dataset.artifact applies to dataset 'upload' only, not {variant!r}")
    if mask:
        out["mask"] = Legacy(None, "dataset.mask applies to dataset 'digits_completion' only, not {variant!r}")
    return out


class SpiralsSpec(DatasetSpec):
    """The two-spirals problem of Haber & Ruthotto used in Reshniak & Webster (200 points, every other point held
    out)."""

    task: ClassVar[TaskName] = "classification"
    legacy_flat = _legacy(scale=False)
    name: Literal["spirals"]
    scale: PosFloat = Field(
        1.0,
        description="multiply the coordinates (points in [-scale, scale]²). 4 puts the Gaussian-noise levels "
        "σ = 0…0.5 of Reshniak & Webster's poster on the scale of its table (examples/spirals-theta-sweep.json)",
    )


class DigitsSpec(DatasetSpec):
    """scikit-learn's bundled 8×8 UCI digits."""

    task: ClassVar[TaskName] = "classification"
    legacy_flat = _legacy()
    name: Literal["digits"]


class UploadSpec(DatasetSpec):
    """A user's ``.npz`` named by ``artifact`` (the first ``n_train`` / ``n_test`` rows of its splits)."""

    task: ClassVar[TaskName] = "classification"
    legacy_flat = _legacy(artifact=False)
    name: Literal["upload"]
    artifact: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="'artifact:<id>' of a dataset uploaded to POST /api/v1/artifacts/datasets (resolved by the "
        "worker), or the path of a local .npz (x_train, y_train, x_test, y_test); required",
    )

    @model_validator(mode="after")
    def _artifact_required(self) -> UploadSpec:
        if self.artifact is None:
            raise ValueError("dataset.artifact is required for dataset 'upload' ('artifact:<id>' or a .npz path)")
        return self


class SineSpec(DatasetSpec):
    """Reshniak & Webster, Example 1: sin x + 0.1·cos 19x on [−5, 5] from ``n_train`` equally spaced points (the
    seed: 51; test: the ``n_test`` cell midpoints); ``noise`` is Gaussian noise on the training targets."""

    task: ClassVar[TaskName] = "regression"
    legacy_flat = _legacy()
    name: Literal["sine"]


class LotkaVolterraSpec(DatasetSpec):
    """RW poster: the Δt = 0.2 flow map z_k ↦ z_{k+1} of ż₁ = 2/3·z₁ − 4/3·z₁z₂, ż₂ = z₁z₂ − z₂ from 50-step
    trajectories (``n_train``, ``n_test`` count pairs); ``noise`` is Gaussian noise on the training targets."""

    task: ClassVar[TaskName] = "regression"
    legacy_flat = _legacy()
    name: Literal["lotka_volterra"]


class _DigitsImages(DatasetSpec):
    """A denoising dataset of the 8×8 digits (Reshniak; inputs and targets in [0, 1])."""

    task: ClassVar[TaskName] = "denoising"

    @model_validator(mode="after")
    def _enough_images(self) -> _DigitsImages:
        if self.n_train + self.n_test > DIGITS_IMAGES:
            raise ValueError(f"{self.name} has {DIGITS_IMAGES} images; n_train + n_test = {self.n_train + self.n_test}")
        return self


class DigitsDenoisingSpec(_DigitsImages):
    """Maps clean + ``noise``·N(0, I) (clipped; ``noise`` = σ_train, required > 0) to the clean digit."""

    legacy_flat = _legacy()
    name: Literal["digits_denoising"]

    @model_validator(mode="after")
    def _noise_given(self) -> DigitsDenoisingSpec:
        if self.noise == 0:
            raise ValueError("dataset.noise is the input corruption σ_train of 'digits_denoising': give one > 0")
        return self


class DigitsCompletionSpec(_DigitsImages):
    """Maps a digit with the ``mask``'s pixels set to 0 (plus optional ``noise``) to the clean digit."""

    legacy_flat = _legacy(mask=False)
    name: Literal["digits_completion"]
    mask: MaskSpec = Field(
        default_factory=MaskSpec, description="the missing pixels (default: a block of 1/4 of the image)"
    )

    @field_validator("mask", mode="before")
    @classmethod
    def _default_mask(cls, value: object) -> object:
        return MaskSpec() if value is None else value  # the old record's null meant the default


class _PublishedImages(DatasetSpec):
    """A published image classification dataset (``core.datasets``): ``n_train`` / ``n_test`` images drawn by
    ``seed`` from its standard training / test split, float pixels in [0, 1] of shape (C, H, W), never standardised
    (every ε is in pixel units); ``noise`` jitters the training images (clipped). The files are read from
    ``ROBUSTLAB_DATA_DIR`` (downloaded once when missing)."""

    task: ClassVar[TaskName] = "classification"

    @model_validator(mode="after")
    def _within_the_split(self) -> _PublishedImages:
        facts = IMAGE_DATASETS[self.name]
        for split in ("n_train", "n_test"):
            size = getattr(facts, split)
            if getattr(self, split) > size:
                raise ValueError(f"dataset.{split}: {self.name} has {size} {split.removeprefix('n_')} images")
        return self


class MnistSpec(_PublishedImages):
    """MNIST (LeCun, Cortes & Burges): 1×28×28 handwritten digits, 60 000 training and 10 000 test images."""

    name: Literal["mnist"]


class FashionMnistSpec(_PublishedImages):
    """Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017): 1×28×28 images of 10 kinds of clothing, 60 000 / 10 000."""

    name: Literal["fashion_mnist"]


class Cifar10Spec(_PublishedImages):
    """CIFAR-10 (Krizhevsky, 2009): 3×32×32 colour images of 10 classes, 50 000 / 10 000 (the binary version)."""

    name: Literal["cifar10"]


class Cifar100Spec(_PublishedImages):
    """CIFAR-100 (Krizhevsky, 2009): 3×32×32 colour images, the 100 fine classes, 50 000 / 10 000 (the binary
    version)."""

    name: Literal["cifar100"]


MAX_PATCH = 128  # below the photographs' 427×640 (core.datasets.PHOTO_DATASETS)


class PhotosDenoisingSpec(DatasetSpec):
    """Denoising of natural colour photographs (Murari, "The Plug-and-Play Method", "Use in a Deblurring Task", with
    scikit-learn's two bundled 427×640 photographs in place of BSDS500): ``n_train`` seeded ``patch`` × ``patch``
    patches of china.jpg, input = clean + ``noise``·N(0, I) clipped to [0, 1] (``noise`` = σ_train, required > 0),
    target = the clean patch; ``n_test`` patches of flower.jpg, a photograph never seen in training."""

    task: ClassVar[TaskName] = "denoising"
    legacy_flat = _legacy()
    name: Literal["photos_denoising"]
    patch: int = Field(32, ge=4, le=MAX_PATCH, description="side P of the square patches (inputs 3 × P × P)")

    @model_validator(mode="after")
    def _noise_given(self) -> PhotosDenoisingSpec:
        if self.noise == 0:
            raise ValueError("dataset.noise is the input corruption σ_train of 'photos_denoising': give one > 0")
        return self


#: The dataset section's type: the union of the variants on ``name`` (the order is the JSON schema's).
DatasetSpecs = close_union(
    DatasetSpec,
    SpiralsSpec,
    DigitsSpec,
    SineSpec,
    LotkaVolterraSpec,
    DigitsDenoisingSpec,
    DigitsCompletionSpec,
    UploadSpec,
    MnistSpec,
    FashionMnistSpec,
    Cifar10Spec,
    Cifar100Spec,
    PhotosDenoisingSpec,
)
#: ``{name: variant}`` of every dataset.
DATASET_VARIANTS: dict[str, type[DatasetSpec]] = variants_of(DatasetSpecs)
# Every dataset has one task; JobSpec.task defaults to it (and must agree with it when given).
DATASET_TASKS: dict[str, str] = {name: variant.task for name, variant in DATASET_VARIANTS.items()}
