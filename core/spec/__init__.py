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

The model and dataset sections are discriminated unions: one pydantic type per family (on ``model.family``) and
per dataset (on ``dataset.name``), each with its own options (``ModelSpecs``, ``DatasetSpecs``; ``ModelSpec`` and
``DatasetSpec`` are their bases and parse through them). Stored specs, full dumps of the old flat record, still
validate and keep their hash: see :class:`core.spec.base.Variant`.

The schema is split by section (``base``, ``dataset``, ``model``, ``train``, ``evaluate``, ``job``); every
name is importable from ``core.spec``.
"""

from core.spec.base import (
    AUTO_SOLVER,
    DIGITS_IMAGES,
    MAX_DEPTH,
    MAX_EPOCHS,
    MAX_FEATURES,
    MAX_LIST,
    MAX_SAMPLES,
    MAX_WORK,
    BackwardSolverName,
    ForwardSolverName,
    Legacy,
    NonNegFloat,
    PosFloat,
    StrictModel,
    Variant,
)
from core.spec.dataset import (
    DATASET_TASKS,
    DATASET_VARIANTS,
    Cifar10Spec,
    Cifar100Spec,
    DatasetSpec,
    DatasetSpecs,
    DigitsCompletionSpec,
    DigitsDenoisingSpec,
    DigitsSpec,
    FashionMnistSpec,
    LotkaVolterraSpec,
    MaskSpec,
    MnistSpec,
    SineSpec,
    SpiralsSpec,
    TaskName,
    UploadSpec,
)
from core.spec.evaluate import (
    MAX_SMOOTHING_SAMPLES,
    MIN_SUITE_STEPS,
    SUITE_ATTACKS,
    SUITE_QUERIES,
    SUITE_STEPS,
    AttackEval,
    AutoAttackEval,
    CertifiedEval,
    EvaluateSpec,
    GaussianEval,
    PGDEval,
    PlugAndPlayEval,
    SmoothingEval,
    SuiteAttack,
)
from core.spec.job import JobSpec
from core.spec.model import (
    MODEL_VARIANTS,
    ExplicitSpec,
    HamiltonianSpec,
    ImplicitSpec,
    LipschitzSpec,
    ModelSpec,
    ModelSpecs,
    OdeSpec,
    SolverSpec,
    SpectralSpec,
)
from core.spec.train import (
    FIELD_REGULARIZERS,
    AugmentSpec,
    DivergenceRegularizer,
    FieldNormRegularizer,
    FixedPointRegularizer,
    NormalRegularizer,
    RegularizersSpec,
    StabilityTraceRegularizer,
    StochasticRegularizer,
    TotalVariationRegularizer,
    TrainSpec,
    WeightedRegularizer,
)

__all__ = [
    "AttackEval",
    "AugmentSpec",
    "AutoAttackEval",
    "AUTO_SOLVER",
    "BackwardSolverName",
    "CertifiedEval",
    "Cifar100Spec",
    "Cifar10Spec",
    "DATASET_TASKS",
    "DATASET_VARIANTS",
    "DIGITS_IMAGES",
    "DatasetSpec",
    "DatasetSpecs",
    "DigitsCompletionSpec",
    "DigitsDenoisingSpec",
    "DigitsSpec",
    "FashionMnistSpec",
    "DivergenceRegularizer",
    "EvaluateSpec",
    "ExplicitSpec",
    "FIELD_REGULARIZERS",
    "FieldNormRegularizer",
    "FixedPointRegularizer",
    "ForwardSolverName",
    "GaussianEval",
    "HamiltonianSpec",
    "ImplicitSpec",
    "JobSpec",
    "Legacy",
    "LipschitzSpec",
    "LotkaVolterraSpec",
    "MAX_DEPTH",
    "MAX_EPOCHS",
    "MAX_FEATURES",
    "MAX_LIST",
    "MAX_SAMPLES",
    "MAX_SMOOTHING_SAMPLES",
    "MAX_WORK",
    "MIN_SUITE_STEPS",
    "MODEL_VARIANTS",
    "MaskSpec",
    "MnistSpec",
    "ModelSpec",
    "ModelSpecs",
    "NonNegFloat",
    "NormalRegularizer",
    "OdeSpec",
    "PGDEval",
    "PlugAndPlayEval",
    "PosFloat",
    "RegularizersSpec",
    "SUITE_ATTACKS",
    "SUITE_QUERIES",
    "SUITE_STEPS",
    "SineSpec",
    "SmoothingEval",
    "SolverSpec",
    "SpectralSpec",
    "SpiralsSpec",
    "StabilityTraceRegularizer",
    "StochasticRegularizer",
    "StrictModel",
    "SuiteAttack",
    "TaskName",
    "TotalVariationRegularizer",
    "TrainSpec",
    "UploadSpec",
    "Variant",
    "WeightedRegularizer",
]
