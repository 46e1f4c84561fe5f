"""The cost estimates of :mod:`core.budget`: every shipped example is within the default limits."""

import json
from pathlib import Path

import pytest

from core.budget import estimate, over_limits
from core.config import Settings
from core.spec import JobSpec
from evaluation.sweep import split_sweep

EXAMPLES = sorted((Path(__file__).parent.parent.parent / "examples").glob("*.json"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_within_the_default_limits(path: Path) -> None:
    spec = JobSpec.model_validate(split_sweep(json.loads(path.read_text()))[0])
    assert over_limits(spec, Settings(_env_file=None)) == []


def test_the_estimates_grow_with_what_they_count() -> None:
    base = {
        "name": "b",
        "dataset": {"name": "spirals"},
        "model": {"family": "explicit", "width": 8, "depth": 4},
        "evaluate": {"gaussian": None, "pgd": {"norm": ["Linf"], "eps": [0.1], "steps": 10, "restarts": 1}},
    }
    small = estimate(JobSpec.model_validate(base))
    base["evaluate"]["pgd"]["restarts"] = 3
    base["model"]["width"] = 16
    large = estimate(JobSpec.model_validate(base))
    assert large.eval_passes == 1 + 3 * (small.eval_passes - 1)
    assert large.parameters > 3 * small.parameters and large.activation_bytes == 2 * small.activation_bytes
    assert large.eval_work == small.eval_work * 4 * large.eval_passes / small.eval_passes
