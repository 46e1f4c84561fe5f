"""Every shipped example spec is a valid job spec."""

import json
from pathlib import Path

import pytest

from core.spec import JobSpec
from evaluation.sweep import split_sweep

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.json"))


def test_there_are_examples():
    assert any(p.name == "spirals-implicit.json" for p in EXAMPLES)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_a_valid_spec_that_round_trips(path):
    base, _axes = split_sweep(json.loads(path.read_text()))  # a sweep preset: its base point
    spec = JobSpec.model_validate(base)
    again = JobSpec.model_validate(spec.model_dump(mode="json"))
    assert again == spec and again.spec_hash() == spec.spec_hash()
