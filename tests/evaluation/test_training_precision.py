"""``train.amp`` and the training state: autocast covers the training forward passes only (never the accuracy
pass, the evaluations or the certificates); on a CPU worker it is a no-op said in the result's warnings; the
schedule's and the float16 gradient scaler's states are in every checkpoint, so a resumed training ends bit for bit
where an uninterrupted one does."""

from __future__ import annotations

import torch
from service_helpers import tiny_spec

from core import metrics
from core.spec import JobSpec, TrainSpec
from evaluation.checkpoints import Checkpointer
from evaluation.datasets import two_spirals
from evaluation.runner import evaluate, run_job
from evaluation.training import Precision, train_classifier

CPU = torch.device("cpu")


class Recorder(torch.nn.Module):
    """A small classifier that records, for every forward pass, whether it was training and under autocast, and
    the dtype of its output."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
        self.calls: list[tuple[bool, bool, torch.dtype]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        self.calls.append((self.training, torch.is_autocast_enabled("cpu"), out.dtype))
        return out

    def lipschitz_bound(self) -> float:
        return float(torch.linalg.matrix_norm(self.net[2].weight, 2) * torch.linalg.matrix_norm(self.net[0].weight, 2))


def test_autocast_covers_the_training_steps_and_nothing_after_them() -> None:
    """CPU autocast (bfloat16) stands in for CUDA's: the same context manager, scoped by the training loop."""
    data = two_spirals(40, 40)
    model = Recorder()
    spec = TrainSpec(epochs=2, lr=0.02, batch_size=20)
    summary = train_classifier(model, data, spec, CPU, precision=Precision(torch.bfloat16, "cpu"))
    training = [c for c in model.calls if c[0]]
    assert len(training) == 4 and all(autocast and dtype == torch.bfloat16 for _, autocast, dtype in training)
    assert [c for c in model.calls if not c[0]] == [(False, False, torch.float32)]  # the accuracy pass
    assert 0.0 <= summary["train_acc"] <= 1.0
    model.calls.clear()
    job = JobSpec.model_validate(tiny_spec("amp-scope", evaluate={"gaussian": {"sigmas": [0, 0.1], "repeats": 2},
                                                                  "pgd": {"eps": [0.05], "steps": 3},
                                                                  "certified": {"eps": [0.05]}}))  # fmt: skip
    measured, _info = evaluate(model, job, data, CPU, lambda _e: None)
    # (the mode is not asserted: torchattacks leaves the attack wrapper, and so the model, in training mode after
    # each attack; that is the attacks' business, not autocast's)
    assert len(model.calls) > 10 and all(not autocast and dtype == torch.float32 for _, autocast, dtype in model.calls)
    assert "certified_l2_acc@0.05" in measured and "eval_seconds_certified" in measured


def test_amp_on_a_cpu_worker_trains_in_full_precision_and_says_so() -> None:
    evaluations = {"gaussian": {"sigmas": [0.1], "repeats": 2}, "certified": {"eps": [0.05]}}
    base = tiny_spec("amp-auto", train={"epochs": 5, "lr": 0.02}, evaluate=evaluations)
    plain = run_job(JobSpec.model_validate(base))
    mixed = run_job(JobSpec.model_validate({**base, "train": {**base["train"], "amp": "bf16"}}))
    assert any("train.amp 'bf16' ignored" in w for w in mixed.info["warnings"]), mixed.info["warnings"]
    assert not any("train.amp" in w for w in plain.info["warnings"])
    same = [k for k in plain.metrics if not metrics.is_timing(k)]
    assert {k: mixed.metrics[k] for k in same} == {k: plain.metrics[k] for k in same}


def weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_a_resumed_training_with_schedule_and_float16_scaler_ends_where_an_uninterrupted_one_does(tmp_path) -> None:
    """Stopped after epoch 2 of 5 and resumed in a fresh model, optimizer, schedule and scaler: the same final
    weights, scale and learning rate to the last bit (CPU float16 autocast stands in for CUDA's)."""
    data = two_spirals(40, 10)
    spec = TrainSpec(epochs=5, lr=0.05, batch_size=10, optimizer="sgd", nesterov=True, clip_grad_norm=1.0,
                     schedule={"kind": "one_cycle", "warmup_epochs": 1.5})  # fmt: skip

    def fp16() -> Precision:
        return Precision(torch.float16, "cpu", torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3))

    def run(directory, stop_after: int | None = None) -> tuple[torch.nn.Module, Precision, list[dict]]:
        events: list[dict] = []
        precision, model = fp16(), Recorder()
        stop = (lambda: len(events) >= stop_after) if stop_after else None
        train_classifier(model, data, spec, CPU, events.append, stop, checkpointer=Checkpointer(directory, "h", 2),
                         precision=precision)  # fmt: skip
        return model, precision, events

    whole, whole_precision, whole_events = run(tmp_path / "whole")
    _, _, first_part = run(tmp_path / "resumed", stop_after=2)
    assert [e["epoch"] for e in first_part] == [1, 2]
    state = torch.load(tmp_path / "resumed" / "epoch-000002.pt", weights_only=True)["state"]
    assert {"scheduler", "scaler", "optimizer", "model"} <= set(state)
    resumed, resumed_precision, rest = run(tmp_path / "resumed")
    assert [e["epoch"] for e in rest] == [2, 3, 4, 5] and rest[-1]["resumed_from"] == 2
    assert torch.equal(weights(resumed), weights(whole))
    assert resumed_precision.scaler.get_scale() == whole_precision.scaler.get_scale()
    assert rest[-1]["lr"] == whole_events[-1]["lr"] and rest[-1]["loss"] == whole_events[-1]["loss"]
    assert whole_precision.scaler.get_scale() != 2.0**10  # the scale moved: its state mattered
