"""Training: a seeded loop over DataLoader batches with the spec's optimizer, schedule, loss, regularizers, mixed
precision and checkpoints, split by concern:

* :mod:`~evaluation.training.loop`: :func:`train_classifier`, the epochs and the steps (and checkpoint state);
* :mod:`~evaluation.training.data`: the dataset, the seeded per-epoch batches, the DataLoader, image augmentation;
* :mod:`~evaluation.training.optim`: optimizers and learning-rate schedules;
* :mod:`~evaluation.training.losses`: cross-entropy, the multi-margin hinge of certified training, MSE, R_rnd and
  the named regularizers;
* :mod:`~evaluation.training.precision`: ``train.amp`` (autocast, GradScaler; CUDA only);
* :mod:`~evaluation.training.diagnostics`: divergence and solver diagnostics.
"""

from evaluation.training.data import augment_images, gaussian_augmentation
from evaluation.training.diagnostics import SolverLog, TrainingDiverged
from evaluation.training.loop import train_classifier
from evaluation.training.losses import add_regularizers, lipschitz_margin, multi_margin_hinge, stochastic_state_penalty
from evaluation.training.precision import AmpIgnored, Precision

__all__ = [
    "AmpIgnored",
    "Precision",
    "SolverLog",
    "TrainingDiverged",
    "add_regularizers",
    "augment_images",
    "gaussian_augmentation",
    "lipschitz_margin",
    "multi_margin_hinge",
    "stochastic_state_penalty",
    "train_classifier",
]
