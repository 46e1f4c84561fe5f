"""``run_job(should_stop=…)`` stops in every phase at the model's next forward pass (issue 18, item 1): the flag is
raised when a phase starts, and no later phase may begin."""

from __future__ import annotations

import pytest

from core.spec import JobSpec
from evaluation.runner import JobStopped, run_job

CLASSIFICATION = {
    "name": "stop-classification",
    "dataset": {"name": "spirals", "n_train": 60, "n_test": 40},
    "model": {"family": "explicit", "width": 8, "depth": 3, "h": 0.2},
    "train": {"epochs": 3, "lr": 0.02},
    "evaluate": {
        "gaussian": {"sigmas": [0.0, 0.1], "repeats": 50},
        "pgd": {"norm": ["Linf", "L2"], "eps": [0.05], "steps": 100, "restarts": 2},
        "autoattack": {"norm": ["Linf"], "eps": [0.05], "attacks": ["apgd-ce", "square"], "steps": 100},
        "certified": {"eps": [0.05]},
    },
}
DENOISING = {
    "name": "stop-denoising",
    "task": "denoising",
    "dataset": {"name": "digits_denoising", "n_train": 40, "n_test": 20, "noise": 0.1},
    "model": {"family": "lipschitz", "width": 64, "hidden": 16, "depth": 2},
    "train": {"epochs": 2, "lr": 0.005},
    "evaluate": {"gaussian": {"sigmas": [0.0], "repeats": 1}, "plug_and_play": {"sigmas": [0.0], "iterations": 5000}},
}


@pytest.mark.parametrize(
    ("spec", "stop_at"),
    [
        (CLASSIFICATION, "train"),
        (CLASSIFICATION, "gaussian"),
        (CLASSIFICATION, "pgd_Linf"),
        (CLASSIFICATION, "pgd_L2"),
        (CLASSIFICATION, "autoattack_Linf"),
        (CLASSIFICATION, "certified"),
        (DENOISING, "plug_and_play"),
    ],
)
def test_should_stop_ends_every_phase(spec: dict, stop_at: str) -> None:
    reported: list[str] = []
    stop = False

    def progress(event: dict) -> None:
        nonlocal stop
        name = event.get("step") or event["phase"]
        if not reported or reported[-1] != name:
            reported.append(name)
        if name == stop_at:
            stop = True

    with pytest.raises(JobStopped):
        run_job(JobSpec.model_validate(spec), progress=progress, should_stop=lambda: stop)
    assert reported[-1] == stop_at, reported  # nothing after the phase in which the flag went up
