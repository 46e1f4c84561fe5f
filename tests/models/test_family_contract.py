"""Contract tests over the model-family registry: every registered family (dense, and convolutional where its spec
allows it) passes the same checks without a line of family-specific test code — float64 gradients against finite
differences, save→load identity, a sound Lipschitz bound (never below the local Lipschitz constant an input
Jacobian shows) and a spec round trip through a checkpoint."""

from __future__ import annotations

import pytest
import torch
from model_checks import assert_save_load_identical, parameter_gradcheck
from pydantic import ValidationError

import models
from core.spec import MODEL_VARIANTS, ModelSpec
from models.families import FAMILY_BUILDERS

INPUTS, CLASSES = 16, 3  # 16 features: a 4×4 image for the convolutional variants


def family_spec(family: str, conv: bool, float64: bool = False) -> ModelSpec:
    """A tiny spec of ``family`` with the defaults of everything else (the neural ODE on a short horizon, so its
    θ-steps stay contractive); solvers tight enough for float64 checks when ``float64``."""
    fields = {"family": family, "depth": 2, "hidden": 4, "input_dim": INPUTS, "output_dim": CLASSES}
    if float64 and "solver" in MODEL_VARIANTS[family].model_fields:  # the θ-method families
        fields["solver"] = {"tol": 1e-12, "max_iter": 500}
    if conv:
        fields |= {"conv": True, "channels": 2}
    elif family == "ode":
        fields["t_final"] = 0.5
    else:
        fields["width"] = 4
    return ModelSpec.model_validate(fields)


def variants() -> list:
    found = []
    for family in sorted(FAMILY_BUILDERS):
        for conv in (False, True):
            try:
                family_spec(family, conv)
            except ValidationError:
                continue  # the family has no convolutional variant
            found.append(pytest.param(family, conv, id=f"{family}-{'conv' if conv else 'dense'}"))
    return found


VARIANTS = variants()


def test_the_spec_and_the_registry_name_the_same_families() -> None:
    spec_families = set(MODEL_VARIANTS)
    assert spec_families == set(FAMILY_BUILDERS)
    assert {v.values[0] for v in VARIANTS} == set(FAMILY_BUILDERS)
    assert any(v.values[1] for v in VARIANTS)  # some family has a convolutional variant


def test_a_family_registers_once() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        models.families.register_family("explicit")(lambda spec: None)


@pytest.mark.parametrize(("family", "conv"), VARIANTS)
def test_gradients_match_finite_differences(family: str, conv: bool) -> None:
    torch.manual_seed(0)
    net = models.build_model(family_spec(family, conv, float64=True)).double()
    x = torch.randn(3, INPUTS, dtype=torch.float64, requires_grad=True)
    assert parameter_gradcheck(net, x)
    assert torch.autograd.gradcheck(net, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(("family", "conv"), VARIANTS)
def test_save_load_identity_and_spec_round_trip(family: str, conv: bool, tmp_path) -> None:
    spec = family_spec(family, conv)
    assert ModelSpec.model_validate_json(spec.model_dump_json()) == spec
    assert_save_load_identical(spec, tmp_path, torch.randn(5, INPUTS), seed=1)
    assert models.read_model_spec(tmp_path) == spec


@pytest.mark.parametrize(("family", "conv"), VARIANTS)
def test_the_bound_is_sound(family: str, conv: bool) -> None:
    torch.manual_seed(2)
    net = models.build_model(family_spec(family, conv, float64=True)).double().eval()
    try:
        bound = models.lipschitz_bound(net)
    except models.LipschitzBoundUnavailable:
        pytest.skip(f"{family}: no bound for these weights (said so, as it must be)")
    local = 0.0
    for x in torch.randn(8, INPUTS, dtype=torch.float64):
        jacobian = torch.autograd.functional.jacobian(lambda v: net(v.unsqueeze(0)).squeeze(0), x)
        local = max(local, float(torch.linalg.matrix_norm(jacobian, 2)))
    assert 0 < local <= bound * (1 + 1e-9), (family, conv, local, bound)
