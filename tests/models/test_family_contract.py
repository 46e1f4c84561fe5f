"""Contract tests over the model-family registry: every registered family (dense, convolutional and the image
backbone where its spec allows them) passes the same checks without a line of family-specific test code — float64
gradients against finite differences, save→load identity, a sound Lipschitz bound (never below the local Lipschitz
constant an input Jacobian shows) and a spec round trip through a checkpoint."""

from __future__ import annotations

import math

import pytest
import torch
from model_checks import assert_save_load_identical, parameter_gradcheck
from pydantic import ValidationError

import models
from core.spec import MODEL_VARIANTS, ModelSpec
from models.families import FAMILY_BUILDERS

CLASSES = 3
# The variants every family is tried in, in one place: each kind's spec fields and one sample's input shape. A
# family is tested in each kind its spec accepts. "conv": 16 features, a 4×4 single-channel image; "image": the
# image backbone on 2×6×6 images, two stages with a pixel-unshuffle between them and normalisation inside;
# "image_out": the image backbone with an image head (``model.head = "image"``: 2×6×6 in, 2×6×6 out, two stages at
# full resolution, a 1×1 convolution back to the input's channels), the shape of a denoiser.
KINDS: dict[str, tuple[dict, tuple[int, ...]]] = {
    "dense": ({"depth": 2, "hidden": 4, "width": 4}, (16,)),
    "conv": ({"depth": 2, "hidden": 4, "conv": True, "channels": 2}, (16,)),
    "image": (
        {
            "conv": True,
            "input_shape": [2, 6, 6],
            "stages": [{"channels": 2, "depth": 2, "hidden": 3}, {"channels": 4, "depth": 1}],
            "normalization": {"mean": [0.5, 0.4], "std": [0.3, 0.2]},
        },
        (2, 6, 6),
    ),
    "image_out": (
        {
            "conv": True,
            "input_shape": [2, 6, 6],
            "output_dim": 72,
            "stages": [{"channels": 4, "depth": 2, "hidden": 3}, {"channels": 2, "depth": 1}],
            "downsample": "none",
            "normalization": {"mean": [0.5, 0.4], "std": [0.3, 0.2]},
            "head": "image",
        },
        (2, 6, 6),
    ),
}


def family_spec(family: str, kind: str, float64: bool = False) -> ModelSpec:
    """A tiny spec of ``family`` in ``kind`` with the defaults of everything else (the neural ODE on a short horizon,
    so its θ-steps stay contractive); solvers tight enough for float64 checks when ``float64``."""
    fields, shape = KINDS[kind]
    fields = {"family": family, "input_dim": math.prod(shape), "output_dim": CLASSES, **fields}
    if float64 and "solver" in MODEL_VARIANTS[family].model_fields:  # the θ-method families
        fields["solver"] = {"tol": 1e-12, "max_iter": 500}
    if family == "ode" and kind == "dense":
        fields = {k: v for k, v in fields.items() if k != "width"} | {"t_final": 0.5}
    return ModelSpec.model_validate(fields)


def inputs(kind: str, n: int, **options) -> torch.Tensor:
    """``n`` inputs of ``kind``'s shape (images for the image backbone, as image datasets give them)."""
    return torch.randn(n, *KINDS[kind][1], **options)


def variants() -> list:
    found = []
    for family in sorted(FAMILY_BUILDERS):
        for kind in KINDS:
            try:
                family_spec(family, kind)
            except ValidationError:
                continue  # the family has no variant of this kind
            found.append(pytest.param(family, kind, id=f"{family}-{kind}"))
    return found


VARIANTS = variants()


def test_the_spec_and_the_registry_name_the_same_families() -> None:
    spec_families = set(MODEL_VARIANTS)
    assert spec_families == set(FAMILY_BUILDERS)
    assert {v.values[0] for v in VARIANTS} == set(FAMILY_BUILDERS)
    assert any(v.values[1] == "conv" for v in VARIANTS)  # some family has a convolutional variant
    # every family whose spec takes ``conv`` builds the image backbone (all but the neural ODE and SLL)
    convolvable = {name for name, variant in MODEL_VARIANTS.items() if "conv" in variant.model_fields}
    assert {v.values[0] for v in VARIANTS if v.values[1] == "image"} == convolvable
    assert {v.values[0] for v in VARIANTS if v.values[1] == "image_out"} == convolvable
    assert convolvable >= {"explicit", "implicit", "hamiltonian", "lipschitz"}


def test_a_family_registers_once() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        models.families.register_family("explicit")(lambda spec: None)


@pytest.mark.parametrize(("family", "kind"), VARIANTS)
def test_gradients_match_finite_differences(family: str, kind: str) -> None:
    torch.manual_seed(0)
    net = models.build_model(family_spec(family, kind, float64=True)).double()
    x = inputs(kind, 3, dtype=torch.float64, requires_grad=True)
    assert parameter_gradcheck(net, x)
    assert torch.autograd.gradcheck(net, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(("family", "kind"), VARIANTS)
def test_save_load_identity_and_spec_round_trip(family: str, kind: str, tmp_path) -> None:
    spec = family_spec(family, kind)
    assert ModelSpec.model_validate_json(spec.model_dump_json()) == spec
    assert_save_load_identical(spec, tmp_path, inputs(kind, 5), seed=1)
    assert models.read_model_spec(tmp_path) == spec


@pytest.mark.parametrize(("family", "kind"), VARIANTS)
def test_the_bound_is_sound(family: str, kind: str) -> None:
    torch.manual_seed(2)
    net = models.build_model(family_spec(family, kind, float64=True)).double().eval()
    try:
        bound = models.lipschitz_bound(net)
    except models.LipschitzBoundUnavailable:
        pytest.skip(f"{family}: no bound for these weights (said so, as it must be)")
    local = 0.0
    for x in inputs(kind, 8, dtype=torch.float64):
        jacobian = torch.autograd.functional.jacobian(lambda v: net(v.unsqueeze(0)).squeeze(0), x)
        local = max(local, float(torch.linalg.matrix_norm(jacobian.reshape(-1, x.numel()), 2)))
    assert 0 < local <= bound * (1 + 1e-9), (family, kind, local, bound)
