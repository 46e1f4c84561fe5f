"""Mini-batch evaluation: every evaluation walks the test set ``evaluate.batch_size`` samples at a time, so the
model never sees more rows than that (peak memory follows the batch, not ``n_test``), and the numbers that do not
depend on a random stream split by batches (the clean pass, Gaussian noise, certificates) do not depend on it."""

from __future__ import annotations

import json

import pytest

from core.spec import JobSpec
from evaluation import runner

SPEC = {
    "name": "batching",
    "dataset": {"name": "spirals", "n_train": 60, "n_test": 100},
    "model": {"family": "explicit", "width": 8, "depth": 2, "h": 0.5},
    "train": {"epochs": 3, "lr": 0.02, "batch_size": 16},
    "evaluate": {
        "gaussian": {"sigmas": [0.0, 0.2], "repeats": 3},
        "pgd": {"norm": ["Linf", "L2"], "eps": [0.1], "steps": 5},
        "autoattack": {"norm": ["Linf"], "eps": [0.1], "attacks": ["apgd-ce", "fab-t", "square"], "steps": 10,
                       "queries": 30},
        "certified": {"eps": [0.05]},
    },
}  # fmt: skip


def run(batch_size: int, monkeypatch) -> tuple[dict, int]:
    """The metrics of the job at ``batch_size`` and the most rows the model saw in one evaluation forward; every
    evaluation forward in eval mode (torchattacks restores the mode it found the attacked module in)."""
    largest = {"rows": 0, "evaluating": False, "training": False}
    prepare, evaluate = runner.prepare_model, runner.evaluate

    def watched(spec, data, device):
        spec, model = prepare(spec, data, device)

        def see(module, inputs):
            if largest["evaluating"]:  # (training and its summary follow train.batch_size)
                largest["rows"] = max(largest["rows"], len(inputs[0]))
                largest["training"] |= module.training

        model.register_forward_pre_hook(see)
        return spec, model

    def evaluating(*args, **kwargs):
        largest["evaluating"] = True
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(runner, "prepare_model", watched)
    monkeypatch.setattr(runner, "evaluate", evaluating)
    spec = JobSpec.model_validate({**SPEC, "evaluate": {**SPEC["evaluate"], "batch_size": batch_size}})
    metrics = runner.run_job(spec).metrics
    assert not largest["training"], "an evaluation forward ran the model in training mode"
    return metrics, largest["rows"]


def test_the_model_never_sees_more_than_a_batch_and_batch_free_numbers_do_not_move(monkeypatch) -> None:
    small, rows = run(16, monkeypatch)
    assert rows == 16  # 100 test samples, 3 noise draws each, every attack: never more than one batch
    whole, rows_whole = run(1000, monkeypatch)
    assert rows_whole == 100
    for name in ("clean_acc", "gaussian_acc@0", "gaussian_acc@0.2", "gaussian_acc_std@0.2", "certified_l2_acc@0.05"):
        assert small[name] == whole[name], name
    for name in ("pgd_linf_acc@0.1", "pgd_l2_acc@0.1", "autoattack_linf_acc@0.1", "robust_linf_acc@0.1"):
        assert 0.0 <= small[name] <= small["clean_acc"]
        assert small[name] == pytest.approx(whole[name], abs=0.1)  # other random starts, the same attack


def test_batch_size_is_validated_and_leaves_old_hashes_alone() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        JobSpec.model_validate({**SPEC, "evaluate": {**SPEC["evaluate"], "batch_size": 0}})
    default = JobSpec.model_validate(SPEC)
    explicit = JobSpec.model_validate({**SPEC, "evaluate": {**SPEC["evaluate"], "batch_size": 1000}})
    assert default.spec_hash() == explicit.spec_hash()
    assert "batch_size" not in json.loads(default.canonical_json())["evaluate"]
