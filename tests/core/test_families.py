"""The family facts (core.families) name the same families as the spec and the model builders, and summarise
every shipped example's spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.families import FAMILIES, hyper_parameters, register_family
from core.spec import MODEL_VARIANTS, JobSpec
from evaluation.sweep import split_sweep
from models.families import FAMILY_BUILDERS

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.json"))


def test_spec_facts_and_builders_name_the_same_families() -> None:
    assert set(MODEL_VARIANTS) == set(FAMILIES) == set(FAMILY_BUILDERS)
    assert all(f.label for f in FAMILIES.values())
    with pytest.raises(ValueError, match="registered twice"):
        register_family(FAMILIES["explicit"])


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_is_summarised(path: Path) -> None:
    base, _axes = split_sweep(json.loads(path.read_text()))  # a sweep preset: its base point
    spec = JobSpec.model_validate(base).model_dump(mode="json")
    hp = hyper_parameters(spec)
    model = spec["model"]
    depth = sum(stage["depth"] for stage in model["stages"]) if model.get("stages") else model["depth"]
    assert hp["depth"] == depth and hp["epochs"] == spec["train"]["epochs"]  # an image backbone: all its steps
    family = model["family"]
    assert hp["theta"] == {"explicit": 0.0, "hamiltonian": None, "lipschitz": None}.get(family, model.get("theta"))
    if family == "ode":
        assert hp["h"] == pytest.approx(model["t_final"] / model["depth"]) and "/" in hp["solver"]
    else:
        assert hp["h"] == model.get("h")  # None where the family has no step size h (lipschitz)
