"""Run one job in-process: data → train (or load) → evaluate → (optionally) write ``result.json``, weights, spec.

The worker and ``robustlab run`` both call :func:`run_job`; it knows nothing of databases or queues.
"""

from __future__ import annotations

import json
import math
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import models
from core.protocol import current_protocol, current_revisions
from core.provenance import current_code
from core.spec import JobSpec
from evaluation.best_known import MASKS_KEY
from evaluation.certified import RADIUS_KEY
from evaluation.checkpoints import Checkpointer, default_every
from evaluation.datasets import DATASETS, Dataset, load_dataset
from evaluation.device import BatchWatch, DeviceFacts, naming_the_batch, resolve_device
from evaluation.gaussian import outputs
from evaluation.outcomes import OUTCOMES_KEY, fingerprint_test_set, pack_outcomes
from evaluation.plots import write_plots
from evaluation.registry import Context, check_relations, run_evaluations
from evaluation.regression import clean_metrics
from evaluation.training import train_classifier

MASK_PREFIX = "robust_mask:"
Progress = Callable[[dict], None]


class SanityCheckFailed(RuntimeError):
    """Evaluated numbers break an invariant (e.g. certified > PGD accuracy): a bug, never stored."""


class JobStopped(Exception):
    """``should_stop`` said so (the job was cancelled or its lease lost): raised at the model's next forward pass."""


def stop_at_next_forward(model: nn.Module, should_stop: Callable[[], bool]):
    """A forward pre-hook on ``model`` that raises :class:`JobStopped` once ``should_stop()`` is true: every phase
    runs the model batch by batch (each training batch, each attack step and restart — torchattacks' loops
    included —, each Gaussian draw, each plug-and-play iteration), so one check there stops them all at the next
    batch. Returns the hook's handle (``.remove()`` it)."""

    def check(_module: nn.Module, _inputs: tuple) -> None:
        if should_stop():
            raise JobStopped("stopped: the job was cancelled or its lease lost")

    return model.register_forward_pre_hook(check)


@dataclass
class RunResult:
    """``metrics`` and ``info`` go to ``result.json`` (and the database); ``arrays`` holds per-sample data that
    does not (``certified_radius``: the certified L2 radius of every test sample, 0 where misclassified)."""

    metrics: dict[str, float]
    info: dict
    model: nn.Module = field(repr=False)
    arrays: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def robust_masks(self) -> dict[str, torch.Tensor]:
        """Per test sample, robust or not, by metric name: each attack's (``pgd_linf_acc@0.1``,
        ``autoattack_linf_acc@0.1``) and the best known (``robust_linf_acc@0.1``); see
        :func:`evaluation.best_known.per_sample_robust`."""
        return {k.removeprefix(MASK_PREFIX): v for k, v in self.arrays.items() if k.startswith(MASK_PREFIX)}

    def to_json(self, spec: JobSpec) -> dict:
        return {
            "name": spec.name,
            "spec_hash": self.info["spec_hash"],
            "spec": spec.model_dump(mode="json"),
            "metrics": self.metrics,
            "info": self.info,
        }


def library_versions() -> dict[str, str]:
    """``robustlab`` (the code identity, :mod:`core.provenance`) and the libraries the numbers depend on."""
    import numpy
    import torchattacks

    return {
        "robustlab": current_code().identity,
        "torch": torch.__version__,
        "torchattacks": torchattacks.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def provenance() -> dict:
    """What produced a result: the code identity (version, commit, dirty flag), the library versions and the
    evaluation protocol (its version and each evaluation's revision, :mod:`core.protocol`)."""
    return {
        "code": current_code().as_dict(),
        "libraries": {k: v for k, v in library_versions().items() if k != "robustlab"},
        "protocol_version": current_protocol(),
        "protocol_revisions": current_revisions(),
    }


def fill_model_spec(model_spec, data: Dataset, dataset_name: str):
    """The model spec with what the data decide filled in: ``input_dim`` and ``output_dim``; for image data (samples
    C×H×W) ``input_shape``; ``normalization: "dataset"`` replaced by the dataset's per-channel statistics.

    Raises:
        ValueError: the filled spec is invalid for these data (e.g. a pixel-unshuffle of an odd image side), or the
            dataset has no per-channel statistics for ``normalization: "dataset"``.
    """
    update = {"input_dim": data.input_dim, "output_dim": data.output_dim}
    fields = type(model_spec).model_fields
    if "input_shape" in fields and data.x_train.dim() == 4 and model_spec.input_shape is None:
        update["input_shape"] = [int(v) for v in data.x_train.shape[1:]]
    if getattr(model_spec, "normalization", None) == "dataset":
        loader = DATASETS.get(dataset_name)
        mean, std = getattr(loader, "mean", None), getattr(loader, "std", None)
        if mean is None or std is None:
            raise ValueError(
                f"model.normalization 'dataset': dataset {dataset_name!r} publishes no per-channel statistics; "
                "give model.normalization {'mean': [...], 'std': [...]}"
            )
        update["normalization"] = {"mean": list(mean), "std": list(std)}
    if set(update) == {"input_dim", "output_dim"}:  # as before the image options: nothing to validate anew
        return model_spec.model_copy(update=update)
    return type(model_spec).model_validate({**model_spec.model_dump(), **update})


def prepare_model(spec: JobSpec, data: Dataset, device: torch.device) -> tuple[JobSpec, nn.Module]:
    """Fill the model's sizes from the data (:func:`fill_model_spec`) and build it (or load ``spec.checkpoint``)."""
    model_spec = fill_model_spec(spec.model, data, spec.dataset.name)
    spec = spec.model_copy(update={"model": model_spec})
    if spec.checkpoint is not None:
        stored = models.read_model_spec(spec.checkpoint)
        if stored != model_spec:
            raise ValueError(f"checkpoint {spec.checkpoint} was saved for a different model spec: {stored}")
        return spec, models.load(spec.checkpoint, device=str(device))
    torch.manual_seed(spec.train.seed)
    return spec, models.build_model(model_spec).to(device)


def evaluate(
    model: nn.Module, spec: JobSpec, data: Dataset, device: torch.device, progress: Progress
) -> tuple[dict, dict]:
    """The clean pass, then every registered evaluation of the data's task that the spec asks for
    (:mod:`evaluation.registry`: Gaussian noise, the attacks, certificates, rollout, plug-and-play), then the sanity
    relations between their numbers. Classification: one clean pass serves clean accuracy, the attacks'
    clean-correct sets and the margins, and every accuracy's per-sample outcomes go to ``info["outcomes"]``
    (:mod:`evaluation.outcomes`)."""
    x, y = data.x_test.to(device), data.y_test.to(device)
    model.eval()
    ctx = Context(model, spec, data, x, y, progress)
    if data.task == "classification":
        ctx.clean_logits = outputs(model, x, spec.evaluate.batch_size)
        ctx.per_sample["clean_acc"] = ctx.clean_logits.argmax(1) == y
        ctx.metrics["clean_acc"] = float(ctx.per_sample["clean_acc"].float().mean())
    else:
        ctx.metrics.update(clean_metrics(model, x, y, data.peak, data.task == "denoising"))
        ctx.info["psnr_peak"] = data.peak
    ctx.info["evaluations"] = run_evaluations(ctx)
    ctx.info["sanity"] = check_sanity(ctx.metrics, data.task)
    if data.task == "classification":
        ctx.info[OUTCOMES_KEY] = pack_outcomes(ctx.per_sample, fingerprint_test_set(x, y))
    return ctx.metrics, ctx.info


def check_sanity(metrics: dict[str, float], task: str | None = None) -> dict[str, bool]:
    """The sanity relations of the job's numbers, raising :class:`SanityCheckFailed` on a violation: the clean
    MSE is finite (regression, denoising), and every registered evaluation's relations hold
    (:func:`evaluation.registry.check_relations`: certified ≤ attacked ≤ clean accuracy; clean MSE ≤ PGD MSE ≤
    certified MSE; …). ``task`` defaults to classification when there is a ``clean_acc``, else regression."""
    task = task or ("classification" if "clean_acc" in metrics else "regression")
    flags = {} if task == "classification" else {"clean_mse_finite": math.isfinite(metrics["clean_mse"])}
    flags.update(check_relations(task, metrics))
    broken = [k for k, ok in flags.items() if not ok]
    if broken:
        raise SanityCheckFailed(f"sanity relations violated (a bug, results not stored): {broken}; metrics={metrics}")
    return flags


def run_job(
    spec: JobSpec,
    out_dir: str | Path | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: Path | None = None,
) -> RunResult:
    """Train (or load) and evaluate the model a spec describes.

    Args:
        spec: the job spec.
        out_dir: if given, write ``result.json``, ``model.safetensors``, ``spec.json`` and the plots
            ``plot_gaussian.png``, ``plot_eps.png``, ``plot_radius.png`` (those the evaluation supports) there.
        progress: called with ``{"phase": "train", "epoch", "epochs", "loss"}`` / ``{"phase": "evaluate", "step"}``.
        should_stop: polled before every forward pass of the model (:func:`stop_at_next_forward`) and between
            epochs; when it returns True the job stops with :class:`JobStopped`, in whatever phase it is.
        checkpoint_dir: if given (and the job trains), training checkpoints go there every
            ``train.checkpoint_every`` epochs (default ``max(1, epochs // 10)``) and after the last, and training
            resumes from the newest one of this spec (:mod:`evaluation.checkpoints`); once the job has finished only
            the final checkpoint is kept. ``info["checkpoints"]`` says what happened.
    Returns:
        :class:`RunResult` with flat metrics, info (versions, attack settings, solver diagnostics) and the model.
    Raises:
        TrainingDiverged, SanityCheckFailed, ValueError, RuntimeError: the job fails with that message.
        OutOfMemory: the device's memory ran out; the message names the batch size (train or evaluate).
        JobStopped: ``should_stop`` returned True.
    """
    progress = progress or (lambda _event: None)
    device = resolve_device(spec.device)
    progress({"phase": "data"})
    data = load_dataset(spec.dataset)
    spec_hash = spec.spec_hash()  # of the spec as submitted, before the data fills in the model's sizes
    spec, model = prepare_model(spec, data, device)
    facts = DeviceFacts(device)
    facts.start()
    checkpointer = None
    if checkpoint_dir is not None and spec.checkpoint is None:
        every = spec.train.checkpoint_every or default_every(spec.train.epochs)
        checkpointer = Checkpointer(Path(checkpoint_dir), spec_hash, every)
    info: dict = {
        "spec_hash": spec_hash,
        "device": str(device),
        "versions": library_versions(),
        "provenance": provenance(),
        "seeds": {"train": spec.train.seed, "dataset": spec.dataset.seed},
        "warnings": [],
    }
    metrics: dict[str, float] = {}
    stop_hook = stop_at_next_forward(model, should_stop) if should_stop is not None else None
    watch = BatchWatch(model)  # the size of the forward pass an out-of-memory error hit
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        try:
            if spec.checkpoint is None:
                train_batch = spec.train.batch_size or len(data.x_train)
                with naming_the_batch("training", "train.batch_size", train_batch, watch):
                    summary = train_classifier(
                        model, data, spec.train, device, progress, should_stop, data.task, checkpointer
                    )
                metrics.update(summary)
            if should_stop is not None and should_stop():  # training broke off between two epochs
                raise JobStopped("stopped: the job was cancelled or its lease lost")
            start = time.perf_counter()
            with naming_the_batch("evaluating", "evaluate.batch_size", spec.evaluate.batch_size, watch):
                eval_metrics, eval_info = evaluate(model, spec, data, device, progress)
            if should_stop is not None and should_stop():  # a phase without a forward pass at its end (certified)
                raise JobStopped("stopped: the job was cancelled or its lease lost")
        finally:
            watch.remove()
            if stop_hook is not None:
                stop_hook.remove()
        metrics.update(eval_metrics)
        metrics["eval_seconds"] = time.perf_counter() - start
    arrays = {RADIUS_KEY: eval_info.pop(RADIUS_KEY)} if RADIUS_KEY in eval_info else {}
    arrays.update({MASK_PREFIX + name: mask for name, mask in eval_info.pop(MASKS_KEY, {}).items()})
    info.update({k: v for k, v in eval_info.items() if k != "warnings"})
    info["warnings"] += eval_info.get("warnings", [])
    solver_stats = model.solver_stats() if hasattr(model, "solver_stats") else []
    if solver_stats:
        metrics["solver_forward_iterations"] = float(max(s.forward_iterations for s in solver_stats))
        metrics["solver_forward_residual"] = max(s.forward_residual for s in solver_stats)
        metrics["solver_backward_iterations"] = float(max(s.backward_iterations for s in solver_stats))
        failures = sum(len(s.failures) for s in solver_stats)
        metrics["solver_failures"] = float(failures)
        if failures:
            info["warnings"].append(f"{failures} solver calls did not reach their tolerance")
        pairs: dict[str, int] = {}  # which forward + backward solvers ran ("auto" resolves per step): solve counts
        for stats in {id(s): s for s in solver_stats}.values():
            for name, count in stats.pairs.items():
                pairs[name] = pairs.get(name, 0) + count
        if pairs:
            info["solver"] = {"pairs": dict(sorted(pairs.items()))}
    info["warnings"] += sorted({str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)})[:20]
    info["hardware"] = facts.as_dict()
    if checkpointer is not None:  # trained and evaluated: the final checkpoint is kept, the older ones go
        kept = [p.name for p in checkpointer.prune(final=True)]
        info["checkpoints"] = {"every": checkpointer.every, "resumed_from": checkpointer.resumed_from,
                               "refused": checkpointer.refused, "kept": kept}  # fmt: skip
    result = RunResult(metrics=metrics, info=info, model=model, arrays=arrays)
    if out_dir is not None:
        write_outputs(result, spec, Path(out_dir))
    progress({"phase": "done"})
    return result


def write_result_plots(result: RunResult, spec: JobSpec, out_dir: Path) -> list[str]:
    """The PNG plots of :mod:`evaluation.plots`; a plotting error is a warning in ``info``, never a failed job."""
    ev = spec.evaluate
    settings = None
    if ev.pgd is not None:
        p = ev.pgd
        settings = f"PGD: {p.steps} steps, {p.restarts} restart(s), seed {p.seed}; certified: Lipschitz margin"
        if spec.task != "classification":
            settings = f"PGD: {p.steps} steps, {p.restarts} restart(s), seed {p.seed}; certified: (‖f(x)−y‖ + Lε)²"
    if ev.smoothing is not None:
        sm = ev.smoothing
        smoothing = f"smoothing (dashed): the smoothed classifier, n={sm.n}, prob. ≥ 1 − {sm.alpha:g}"
        settings = smoothing if settings is None else f"{settings}\n{smoothing}"
    try:
        return write_plots(
            out_dir,
            result.metrics,
            title=spec.name,
            radii=result.arrays[RADIUS_KEY].tolist() if RADIUS_KEY in result.arrays else None,
            certified_eps=ev.certified.eps if ev.certified is not None else (),
            eps_settings=settings,
            radius_method=result.info.get("certified", {}).get("method"),
        )
    except Exception as exc:  # matplotlib missing or failing must not lose a finished job's numbers
        result.info.setdefault("warnings", []).append(f"plots not written: {type(exc).__name__}: {exc}")
        return []


def write_outputs(result: RunResult, spec: JobSpec, out_dir: Path) -> None:
    """``result.json``, ``model.safetensors``, ``spec.json`` and the plots (``info["plots"]`` lists them), each
    written to a temporary name then renamed, so a crash never leaves a half-written file under the final name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result.info["plots"] = write_result_plots(result, spec, out_dir)
    partial = models.save(result.model, spec.model, out_dir / ".partial-model.safetensors")
    partial.replace(out_dir / models.io.WEIGHTS_FILE)
    for name, payload in (("spec.json", spec.model_dump(mode="json")), ("result.json", result.to_json(spec))):
        part = out_dir / f".{name}.tmp"
        part.write_text(json.dumps(payload, indent=2, sort_keys=True))
        part.replace(out_dir / name)


__all__ = ["RunResult", "SanityCheckFailed", "evaluate", "resolve_device", "run_job"]
