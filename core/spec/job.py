"""The job: a dataset, a model, its training and its evaluation, with the checks that span sections."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from core.datasets import IMAGE_DATASETS, image_input_shape, is_pixel_image
from core.spec.base import MAX_WORK, StrictModel, canonical_dump
from core.spec.dataset import DATASET_TASKS, DatasetSpecs, TaskName
from core.spec.evaluate import EvaluateSpec
from core.spec.model import ModelSpecs
from core.spec.train import FIELD_REGULARIZERS, TrainSpec


class JobSpec(StrictModel):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@+=-]*$")
    task: TaskName | None = Field(
        None,
        description="classification (spirals, digits, upload, mnist, fashion_mnist, cifar10, cifar100), regression "
        "(sine, lotka_volterra) or denoising (digits_denoising, digits_completion, photos_denoising); default: the "
        "dataset's task, and it must agree with it",
    )
    dataset: DatasetSpecs
    model: ModelSpecs
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
        if self.evaluate.smoothing is not None and self.task != "classification":
            raise ValueError("evaluate.smoothing needs task 'classification' (it certifies a class vote)")
        if getattr(self.model, "head", "classifier") == "image" and self.task != "denoising":
            raise ValueError(
                f"model.head 'image' (an image out for an image in) needs task 'denoising', not {self.task!r}: "
                "take model.head 'classifier'"
            )
        if getattr(self.model, "head", "classifier") == "image" and image_input_shape(self.dataset) is None:
            raise ValueError(
                f"model.head 'image' needs a dataset of (C, H, W) images such as 'photos_denoising', not "
                f"{self.dataset.name!r} (flat inputs)"
            )
        if self.evaluate.plug_and_play is not None and self.task != "denoising":
            raise ValueError("evaluate.plug_and_play needs task 'denoising' (a trained image denoiser)")
        return self

    @model_validator(mode="after")
    def _training_options_fit_the_job(self) -> JobSpec:
        """Classification-only losses, and mixed precision only where CUDA may run it (``device: "auto"`` on a CPU
        worker trains in full precision and says so in the result's warnings)."""
        train = self.train
        if self.task != "classification":
            if train.label_smoothing != 0.0:
                raise ValueError(f"train.label_smoothing applies to task 'classification' only, not {self.task!r}")
            if train.loss != "cross_entropy":
                raise ValueError(
                    f"train.loss {train.loss!r} applies to task 'classification' only ({self.task} trains on the "
                    "mean squared error)"
                )
        if train.amp is not None:
            if self.device == "cpu":
                raise ValueError(
                    f"train.amp {train.amp!r} needs CUDA (autocast on a GPU), but the job asks for device 'cpu'"
                )
            if getattr(self.model, "theta", None):  # θ > 0: every forward solves for a fixed point
                raise ValueError(
                    f"train.amp does not apply to family {self.model.family!r} with θ > 0: its fixed-point solves "
                    f"run to model.solver.tol, which {train.amp} arithmetic cannot reach"
                )
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
    def _model_fits_the_data(self) -> JobSpec:
        """A conv model checked against the input its dataset will give (an image model on flat data, a
        single-channel conv model on colour images, stages that unshuffle an odd side, normalisation of another
        channel count are 422s naming the field, not failed jobs); ``normalization: "dataset"`` needs published
        per-channel statistics."""
        model, name = self.model, self.dataset.name
        if getattr(model, "normalization", None) == "dataset" and name not in IMAGE_DATASETS:
            images = ", ".join(sorted(IMAGE_DATASETS))
            raise ValueError(
                f"model.normalization 'dataset' needs a dataset with published per-channel statistics ({images}), "
                f"not {name!r}: give {{'mean': [...], 'std': [...]}}"
            )
        if not model.is_conv() or model.input_dim is not None:
            return self
        from core.budget import DATASET_DIMS  # the built-in datasets' sizes (core.budget reads this module)

        shape = image_input_shape(self.dataset)
        fields = {"input_dim": math.prod(shape), "input_shape": list(shape)} if shape else {}
        if not fields and name in DATASET_DIMS:
            fields = {"input_dim": DATASET_DIMS[name][0]}
        if fields:
            try:
                type(model).model_validate({**model.model_dump(), **fields})
            except ValidationError as exc:
                message = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
                shape = fields.get("input_shape") or [fields["input_dim"]]
                raise ValueError(f"{message} (dataset {name!r} gives inputs of shape {shape})") from None
        return self

    @model_validator(mode="after")
    def _images_in_pixel_space(self) -> JobSpec:
        """Image datasets live in [0, 1] pixel space: every ε is at most 1 (L∞ 8/255, L2 36/255 or 0.5), and only
        images can be cropped and flipped (an upload's shape is known at run time: the training loop checks it)."""
        name = self.dataset.name
        if self.train.augment is not None and name not in IMAGE_DATASETS and name != "upload":
            images = ", ".join(sorted(IMAGE_DATASETS))
            raise ValueError(f"train.augment needs an image dataset ({images}, or an upload of images), not {name!r}")
        if is_pixel_image(name):
            ev = self.evaluate
            for field, section in (("pgd", ev.pgd), ("autoattack", ev.autoattack), ("certified", ev.certified)):
                if section is not None and max(section.eps) > 1.0:
                    raise ValueError(
                        f"evaluate.{field}.eps: ε = {max(section.eps):g} is outside [0, 1], the pixel range of image "
                        f"dataset {name!r} (e.g. L∞ 8/255 = 0.0314, L2 0.5)"
                    )
        return self

    @model_validator(mode="after")
    def _work_budget(self) -> JobSpec:
        work = self.model.work() * self.train.epochs * self.dataset.n_train
        if work > MAX_WORK:
            raise ValueError(
                f"job too large: width²·depth·epochs·n_train = {work:.3g} exceeds the limit {MAX_WORK:.3g}"
            )
        return self

    def canonical_json(self) -> str:
        """The spec with all defaults filled in (but the newer options that hold theirs, see
        :attr:`~core.spec.base.StrictModel.added_fields`), keys sorted: the input of :meth:`spec_hash`."""
        return json.dumps(canonical_dump(self), sort_keys=True, separators=(",", ":"))

    def spec_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def queue(self) -> str:
        """Celery queue for this job: ``gpu`` when it asks for CUDA, ``cpu`` otherwise."""
        return "gpu" if self.device == "cuda" else "cpu"
