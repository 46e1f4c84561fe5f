"""The training options of ``train``: each is a 422 naming its field when misused, keeps the hash of specs that
do not use it, and changes training as it claims: the optimizers' updates against hand computations, each
schedule's learning rate at every step against its closed form, clipped gradient norms, label smoothing against its
formula, and the throughput metric."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from torch.nn import functional as F
from torch.optim.optimizer import register_optimizer_step_pre_hook

from core.spec import JobSpec, TrainSpec
from evaluation.datasets import Dataset, two_spirals
from evaluation.training import train_classifier
from evaluation.training.optim import build_optimizer, build_schedule, warmup_steps

CPU = torch.device("cpu")
JOB = {"name": "opts", "dataset": {"name": "spirals"}, "model": {"family": "explicit", "width": 4, "depth": 2}}


def job(train: dict, **top) -> dict:
    return {**JOB, "train": {"epochs": 10, **train}, **top}


# ------------------------------------------------------------------------------------------------- spec: 422s
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (job({"optimizer": "rmsprop"}), "train.optimizer"),
        (job({"optimizer": "adam", "momentum": 0.5}), "train.momentum applies to optimizer 'sgd' only"),
        (job({"optimizer": "adamw", "nesterov": True}), "train.nesterov applies to optimizer 'sgd' only"),
        (job({"optimizer": "sgd", "momentum": 0.0, "nesterov": True}), "train.nesterov needs train.momentum > 0"),
        (job({"optimizer": "sgd", "momentum": 1.0}), "train.momentum"),
        (job({"schedule": {"kind": "cosine", "warmup_epochs": 10}}), "train.schedule.warmup_epochs = 10 is not"),
        (job({"schedule": {"kind": "step", "warmup_epochs": 12, "step_size": 2}}), "train.schedule.warmup_epochs"),
        (job({"epochs": 3, "schedule": {"kind": "one_cycle", "warmup_epochs": 3}}), "train.schedule.warmup_epochs"),
        (job({"schedule": {"kind": "step"}}), "train.schedule.step_size is required"),
        (job({"schedule": {"kind": "cosine", "gamma": 0.5}}), "train.schedule.gamma applies to kind 'step'"),
        (job({"schedule": {"kind": "step", "step_size": 2, "min_lr": 0.001}}), "train.schedule.min_lr applies"),
        (job({"schedule": {"kind": "one_cycle", "warmup_start": 0.5}}), "train.schedule.warmup_start does not"),
        (job({"lr": 0.01, "schedule": {"kind": "cosine", "min_lr": 0.02}}), "train.schedule.min_lr = 0.02 must be"),
        (job({"schedule": {"kind": "linear"}}), "train.schedule.kind"),
        (job({"clip_grad_norm": 0}), "train.clip_grad_norm"),
        (job({"label_smoothing": 1.0}), "train.label_smoothing"),
        (job({"loss": "hinge"}), "train.loss"),
        (job({"loss": "multi_margin"}), "train.margin is required"),
        (job({"loss": "multi_margin", "margin": {}}), "train.margin takes exactly one of eps"),
        (job({"loss": "multi_margin", "margin": {"eps": 0.1, "logits": 1.0}}), "train.margin takes exactly one"),
        (job({"loss": "multi_margin", "margin": {"eps": -0.1}}), "train.margin.eps"),
        (job({"margin": {"logits": 1.0}}), "train.margin applies to train.loss 'multi_margin' only"),
        (job({"loss": "multi_margin", "margin": {"logits": 1.0}, "label_smoothing": 0.1}), "train.label_smoothing"),
        (job({"loss": "multi_margin", "margin": {"logits": 1.0}, "logit_scale": 10.0}), "train.logit_scale"),
        ({**job({"label_smoothing": 0.1}), "dataset": {"name": "sine"}}, "train.label_smoothing applies to task"),
        ({**job({"loss": "multi_margin", "margin": {"logits": 1}}), "dataset": {"name": "sine"}}, "train.loss"),
        (job({"amp": "bf16"}, device="cpu"), "train.amp 'bf16' needs CUDA"),
        (job({"amp": "fp32"}), "train.amp"),
        ({**job({"amp": "fp16"}), "model": {"family": "implicit", "theta": 0.5}}, "train.amp does not apply"),
        (job({"loader_workers": -1}), "train.loader_workers"),
        (job({"loader_workers": 1000}), "train.loader_workers"),
    ],
)
def test_a_misused_option_is_refused_naming_its_field(spec: dict, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(spec)
    text = str(info.value)
    field = message.split()[0].split(".")
    located = any(tuple(str(p) for p in e["loc"])[: len(field)] == tuple(field) for e in info.value.errors())
    assert message in text or located, text


def test_the_new_options_at_their_defaults_keep_the_hash() -> None:
    plain = JobSpec.model_validate(job({}))
    explicit = JobSpec.model_validate(
        job({"momentum": 0.9, "nesterov": False, "schedule": None, "clip_grad_norm": None, "label_smoothing": 0.0,
             "loss": "cross_entropy", "margin": None, "amp": None, "loader_workers": 0})
    )  # fmt: skip
    assert explicit.spec_hash() == plain.spec_hash()
    assert JobSpec.model_validate(job({"loader_workers": 2})).spec_hash() != plain.spec_hash()
    assert "schedule" not in plain.canonical_json() and "amp" not in plain.canonical_json()


# ------------------------------------------------------------------------------------------------- optimizers
def updates(spec: TrainSpec, grads: list[list[float]]) -> list[float]:
    """The parameter after each step of ``build_optimizer(spec)`` fed the given gradients (float64), one after
    the other in a flat list."""
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = build_optimizer([p], spec)
    out = []
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        out += p.detach().tolist()
    return out


GRADS = [[0.5, -1.0], [0.25, 2.0], [-1.0, 0.5]]


def test_sgd_momentum_and_nesterov_follow_their_update_rules() -> None:
    lr, mu = 0.1, 0.8
    for nesterov in (False, True):
        p, v, expected = [1.0, -2.0], None, []
        for g in GRADS:
            v = list(g) if v is None else [mu * vi + gi for vi, gi in zip(v, g, strict=True)]
            step = [gi + mu * vi for gi, vi in zip(g, v, strict=True)] if nesterov else v
            p = [pi - lr * si for pi, si in zip(p, step, strict=True)]
            expected += p
        got = updates(TrainSpec(optimizer="sgd", lr=lr, momentum=mu, nesterov=nesterov), GRADS)
        assert got == pytest.approx(expected, rel=1e-12)
    # the default momentum is still 0.9, as before the option
    default = updates(TrainSpec(optimizer="sgd", lr=lr), GRADS[:2])
    assert default[2] == pytest.approx(1.0 - lr * 0.5 - lr * (0.9 * 0.5 + 0.25), rel=1e-12)


def test_adamw_decays_the_weights_apart_from_the_gradient() -> None:
    lr, wd, b1, b2, eps = 0.01, 0.5, 0.9, 0.999, 1e-8
    p, m, v, expected = [1.0, -2.0], [0.0, 0.0], [0.0, 0.0], []
    for t, g in enumerate(GRADS, start=1):
        p = [pi * (1 - lr * wd) for pi in p]  # decoupled: the decay never enters m and v
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g, strict=True)]
        v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(v, g, strict=True)]
        p = [
            pi - lr * (mi / (1 - b1**t)) / (math.sqrt(vi / (1 - b2**t)) + eps)
            for pi, mi, vi in zip(p, m, v, strict=True)
        ]
        expected += p
    assert updates(TrainSpec(optimizer="adamw", lr=lr, weight_decay=wd), GRADS) == pytest.approx(expected, rel=1e-10)
    assert updates(TrainSpec(optimizer="adam", lr=lr, weight_decay=wd), GRADS) != pytest.approx(expected, rel=1e-3)


# ------------------------------------------------------------------------------------------------- schedules
def step_lrs(spec: TrainSpec, steps_per_epoch: int) -> list[float]:
    """The learning rate each optimizer step of the training uses."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=spec.lr)
    schedule = build_schedule(opt, spec, steps_per_epoch)
    lrs = []
    for _ in range(spec.epochs * steps_per_epoch):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    return lrs


def cosine_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * pct)) / 2


def test_cosine_with_warm_up_is_linear_then_the_cosine() -> None:
    lr, low, spe = 0.1, 0.001, 3
    spec = TrainSpec(epochs=6, lr=lr, schedule={"kind": "cosine", "warmup_epochs": 1.5, "min_lr": low,
                                               "warmup_start": 0.2})  # fmt: skip
    warm, total = warmup_steps(spec, spe), 6 * spe
    assert warm == round(1.5 * spe)  # a warm-up may end mid-epoch: the schedule steps per batch
    expected = [lr * (0.2 + 0.8 * t / warm) if t < warm else cosine_anneal(lr, low, (t - warm) / (total - warm))
                for t in range(total)]  # fmt: skip
    assert step_lrs(spec, spe) == pytest.approx(expected, rel=1e-9)


def test_step_decays_every_step_size_epochs_after_the_warm_up() -> None:
    spec = TrainSpec(epochs=7, lr=0.1, schedule={"kind": "step", "step_size": 2, "gamma": 0.5, "warmup_epochs": 1})
    spe = 2
    expected = [0.1 * (0.1 + 0.9 * t / 2) if t < 2 else 0.1 * 0.5 ** ((t - 2) // (2 * spe)) for t in range(14)]
    assert step_lrs(spec, spe) == pytest.approx(expected, rel=1e-9)
    plain = TrainSpec(epochs=5, lr=0.1, schedule={"kind": "step", "step_size": 2})  # gamma 0.1, no warm-up
    assert step_lrs(plain, 1) == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001], rel=1e-9)


def test_one_cycle_rises_from_lr_over_25_then_falls_to_min_lr() -> None:
    lr, low = 0.2, 1e-4
    spec = TrainSpec(epochs=5, lr=lr, schedule={"kind": "one_cycle", "warmup_epochs": 2, "min_lr": low})
    spe, peak = 4, 2 * 4 - 1  # the rise spans steps 0 … warm − 1
    total = 5 * spe
    expected = [cosine_anneal(lr / 25, lr, t / peak) if t <= peak else
                cosine_anneal(lr, low, (t - peak) / (total - 1 - peak)) for t in range(total)]  # fmt: skip
    got = step_lrs(spec, spe)
    assert got == pytest.approx(expected, rel=1e-9)
    assert max(got) == pytest.approx(lr) and got[-1] == pytest.approx(low)
    default = TrainSpec(epochs=10, lr=lr, schedule={"kind": "one_cycle"})  # rises over 30 % of training
    assert warmup_steps(default, 2) == 6 and step_lrs(default, 2)[5] == pytest.approx(lr)


def test_a_scheduled_training_reports_the_rate_of_its_closed_form_per_epoch() -> None:
    data = two_spirals(40, 10)
    spec = TrainSpec(epochs=4, lr=0.05, batch_size=10, schedule={"kind": "cosine"})  # 4 steps per epoch
    events: list[dict] = []
    train_classifier(spirals_net(), data, spec, CPU, progress=events.append)
    assert [e["lr"] for e in events] == pytest.approx([cosine_anneal(0.05, 0.0, 4 * k / 16) for k in (1, 2, 3, 4)])
    with pytest.raises(ValueError, match="one_cycle' needs at least 3 optimizer steps"):
        train_classifier(spirals_net(), data, TrainSpec(epochs=2, schedule={"kind": "one_cycle"}), CPU)


# ------------------------------------------------------------------------------------------- clipping, smoothing
def spirals_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))


def step_grad_norms(spec: TrainSpec, data: Dataset) -> list[float]:
    """The global gradient norm each optimizer step of a training sees."""
    norms: list[float] = []

    def record(opt, _args, _kwargs) -> None:
        grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    handle = register_optimizer_step_pre_hook(record)
    try:
        train_classifier(spirals_net(), data, spec, CPU)
    finally:
        handle.remove()
    return norms


def test_clipping_bounds_the_gradient_norm_of_every_step() -> None:
    data, bound = two_spirals(40, 10), 0.05
    free = step_grad_norms(TrainSpec(epochs=3, lr=0.05, batch_size=10), data)
    clipped = step_grad_norms(TrainSpec(epochs=3, lr=0.05, batch_size=10, clip_grad_norm=bound), data)
    assert len(free) == len(clipped) == 12 and max(free) > 2 * bound
    assert max(clipped) <= bound * (1 + 1e-5)
    assert min(clipped) > 0.5 * bound  # clipped to the bound, not zeroed


def test_label_smoothing_is_the_mixture_of_cross_entropy_and_the_uniform_loss() -> None:
    data, s = two_spirals(40, 10), 0.2
    initial = spirals_net()
    with torch.no_grad():
        log_p = torch.log_softmax(initial(data.x_train).double(), dim=1)
    nll = -log_p.gather(1, data.y_train[:, None]).squeeze(1)
    by_hand = float(((1 - s) * nll + s * (-log_p.mean(dim=1))).mean())  # Szegedy et al. 2016, §7
    events: list[dict] = []
    train_classifier(spirals_net(), data, TrainSpec(epochs=1, label_smoothing=s), CPU, progress=events.append)
    assert events[0]["loss"] == pytest.approx(by_hand, rel=1e-5)  # one full batch: the loss of the initial weights
    assert by_hand == pytest.approx(float(F.cross_entropy(log_p, data.y_train, label_smoothing=s)), rel=1e-12)
    plain: list[dict] = []
    train_classifier(spirals_net(), data, TrainSpec(epochs=1), CPU, progress=plain.append)
    assert plain[0]["loss"] == pytest.approx(float(nll.mean()), rel=1e-5) != events[0]["loss"]


def test_throughput_counts_the_samples_through_the_optimizer() -> None:
    data = two_spirals(40, 10)
    summary = train_classifier(spirals_net(), data, TrainSpec(epochs=5, batch_size=16), CPU)
    rate = summary["train_images_per_second"]
    assert rate > 0 and 5 * 40 / rate <= summary["train_seconds"]
