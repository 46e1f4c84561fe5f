"""What a job will cost, estimated from its spec alone (no torch), and the refusal of jobs over the limits.

The API checks every submitted spec against the limits in :class:`~core.config.Settings` (``ROBUSTLAB_MAX_*``) and
answers ``422`` naming the estimate and the limit (:func:`over_limits`). The estimates are coarse on purpose: they
are upper-bound-ish orders of magnitude, cheap enough to compute on every submission:

* **parameters**: weights of the embedding, the ``depth`` steps (one set with ``shared_weights``) and the head.
  A dense step holds 2·W·H + W + H numbers (W the state width, H the hidden units; a Hamiltonian step two such),
  a convolutional one 2·C·H·k² + C + H;
* **activation memory** (bytes, float32): what backpropagation keeps, 4 numbers of the state and hidden width per
  step and sample, for the largest batch that is differentiated — a training batch, or the test set under attack;
* **evaluation passes**: forward (and backward) passes over the test set that the evaluation makes: Gaussian
  σ × repeats, PGD norms × ε × steps × restarts, AutoAttack norms × ε × (APGD/FAB steps per attack + Square
  queries), randomized smoothing σ × (n0 + n) noisy copies, plug-and-play σ × iterations. Each pass costs at
  least one round of Python and kernel launches however small the model, so their number is bounded by itself;
* **evaluation work**: passes × test samples × work per sample (``ModelSpec.work()``: width² · depth), the
  same unit as the training budget of :mod:`core.spec`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.datasets import IMAGE_DATASETS, image_input_shape
from core.spec import JobSpec, ModelSpec

#: (input_dim, output_dim) of the built-in datasets (an upload's come from its file: the spec's, or 1)
DATASET_DIMS = {
    "spirals": (2, 2),
    "digits": (64, 10),
    "sine": (1, 1),
    "lotka_volterra": (2, 2),
    "digits_denoising": (64, 64),
    "digits_completion": (64, 64),
    **{name: (image.input_dim, image.num_classes) for name, image in IMAGE_DATASETS.items()},
}
BYTES_PER_NUMBER = 4
SAVED_PER_STEP = 4  # state and hidden numbers kept per step and sample for backward (input, pre-activation, …)


@dataclass(frozen=True)
class Estimate:
    parameters: float
    activation_bytes: float
    eval_passes: float
    eval_work: float


def _model(spec: JobSpec) -> ModelSpec:
    """The model section with an image dataset's input size and shape filled in where the spec leaves them open (as
    the runner will), so that an image backbone's stages are estimated at their real resolution."""
    model, shape = spec.model, image_input_shape(spec.dataset)
    if shape is None or model.input_dim is not None or "input_shape" not in type(model).model_fields:
        return model
    return model.model_copy(update={"input_dim": math.prod(shape), "input_shape": list(shape)})


def _dims(spec: JobSpec) -> tuple[int, int]:
    known = DATASET_DIMS.get(spec.dataset.name, (1, 1))
    if spec.dataset.name not in DATASET_DIMS and (shape := image_input_shape(spec.dataset)) is not None:
        known = (math.prod(shape), math.prod(shape))  # a photo dataset: patches in, patches out
    return spec.model.input_dim or known[0], spec.model.output_dim or known[1]


def _widths(model: ModelSpec, input_dim: int) -> tuple[float, float]:
    """(state numbers, hidden numbers) per sample and step (the widest stage of an image backbone)."""
    if model.family == "ode":
        state = 2 * input_dim
        return state, model.hidden or 100
    if getattr(model, "stages", None):
        layout = model.layout()
        return max(c * px for c, _, px, _ in layout), max(hid * px for _, hid, px, _ in layout)
    if model.is_conv():
        return model.channels * input_dim, (model.hidden or model.channels) * input_dim
    return model.width, model.hidden or model.width


def parameters(spec: JobSpec) -> float:
    model = _model(spec)
    input_dim, output_dim = _dims(spec)
    if getattr(model, "stages", None):
        # image backbone: a residual step has two k×k convolutions C ↔ hidden, a gradient-flow step one, a symplectic
        # step two on C/2 channels each; the lift C_in → C₁, a 1×1 convolution 4C → C' between stages
        k2, stages = model.kernel_size**2, model.stages
        kernels = 1 if model.family in ("hamiltonian", "lipschitz") else 2
        steps = sum(
            (1 if model.shared_weights else depth) * (kernels * c * hid * k2 + c + hid)
            for c, hid, _, depth in model.layout()
        )
        downsample = sum(4 * a.channels * b.channels for a, b in zip(stages, stages[1:], strict=False))
        c_in = (model.image() or (input_dim,))[0]
        lift = c_in * stages[0].channels * k2
        head_out = c_in if model.head == "image" else output_dim  # a 1×1 convolution back to the input's channels
        return float(steps + downsample + lift + (stages[-1].channels + 1) * head_out)
    if model.is_conv():
        hidden = model.hidden or model.channels
        per_step = 2 * model.channels * hidden * model.kernel_size**2 + model.channels + hidden
        state = model.channels * input_dim
    else:
        state, hidden = _widths(model, input_dim)
        per_step = 2 * state * hidden + state + hidden
        if model.family == "hamiltonian":
            per_step *= 2  # ∇K and ∇U
    steps = 1 if model.shared_weights else model.depth
    return float(per_step * steps + (input_dim + 1) * state + (state + 1) * output_dim)


def activation_bytes(spec: JobSpec) -> float:
    input_dim, _ = _dims(spec)
    state, hidden = _widths(_model(spec), input_dim)
    train_batch = 0 if spec.checkpoint else min(spec.train.batch_size or spec.dataset.n_train, spec.dataset.n_train)
    # attacks run batch by batch (evaluate.batch_size): the largest differentiated batch is one of them
    attacks = spec.evaluate.pgd or spec.evaluate.autoattack
    attacked = min(spec.dataset.n_test, spec.evaluate.batch_size) if attacks else 0
    batch = max(train_batch, attacked, 1)
    return float(BYTES_PER_NUMBER * SAVED_PER_STEP * (state + hidden) * spec.model.step_count() * batch)


def eval_passes(spec: JobSpec) -> float:
    ev = spec.evaluate
    passes = 1.0  # the clean pass
    if ev.gaussian is not None:
        passes += len(ev.gaussian.sigmas) * ev.gaussian.repeats
    if ev.pgd is not None:
        # and once more with twice the steps at each norm's largest ε (evaluation.best_known's reliability check)
        passes += len(ev.pgd.norm) * (len(ev.pgd.eps) + 2) * ev.pgd.steps * ev.pgd.restarts
    if ev.autoattack is not None:
        aa = ev.autoattack
        per_eps = sum(aa.queries if attack == "square" else aa.steps for attack in aa.attacks) * aa.restarts
        passes += len(aa.norm) * (len(aa.eps) + int(aa.sanity)) * per_eps  # the sanity ε too
    if ev.smoothing is not None:
        passes += len(ev.smoothing.sigmas) * (ev.smoothing.n0 + ev.smoothing.n)
    if ev.plug_and_play is not None:
        passes += len(ev.plug_and_play.sigmas) * ev.plug_and_play.iterations
    return passes


def estimate(spec: JobSpec) -> Estimate:
    passes = eval_passes(spec)
    work = _model(spec).work() * spec.dataset.n_test * passes
    return Estimate(parameters(spec), activation_bytes(spec), passes, work)


def over_limits(spec: JobSpec, limits) -> list[tuple[str, str]]:
    """``(field, message)`` for each estimate of ``spec`` over its limit in ``limits`` (a Settings: ``max_parameters``,
    ``max_activation_bytes``, ``max_eval_passes``, ``max_eval_work``; 0 = no limit)."""
    found = estimate(spec)
    checks = [
        ("model", "parameters", found.parameters, limits.max_parameters, "ROBUSTLAB_MAX_PARAMETERS"),
        ("model", "activation memory (bytes)", found.activation_bytes, limits.max_activation_bytes,
         "ROBUSTLAB_MAX_ACTIVATION_BYTES"),
        ("evaluate", "evaluation passes over the test set", found.eval_passes, limits.max_eval_passes,
         "ROBUSTLAB_MAX_EVAL_PASSES"),
        ("evaluate", "evaluation work (passes × n_test × width² × depth)", found.eval_work, limits.max_eval_work,
         "ROBUSTLAB_MAX_EVAL_WORK"),
    ]  # fmt: skip
    return [
        (field, f"job too large: estimated {what} {value:.3g} exceeds the limit {limit:.3g} ({setting})")
        for field, what, value, limit, setting in checks
        if limit and value > limit
    ]
