"""Convolutional residual functions for the explicit / implicit families (``model.conv = true``): the exact operator
norm of a zero-padded convolution, gradients against finite differences (float64), a sound Lipschitz bound under a
gradient-ascent search, save/load, spec validation."""

import pytest
import torch
from model_checks import assert_save_load_identical, parameter_gradcheck
from pydantic import ValidationError
from test_lipschitz import largest_local_ratio
from torch.autograd.functional import jacobian

from core.spec import JobSpec, ModelSpec
from models import build_model, lipschitz_bound
from models.conv import ConvEmbedding, ConvResidualFunction, conv_operator_matrix, conv_operator_norm
from models.lipschitz_layers import conv_operator_norm_bound


def conv_spec(family="explicit", **fields):
    base = {"family": family, "conv": True, "channels": 2, "hidden": 3, "kernel_size": 3, "depth": 2, "h": 0.3,
            "input_dim": 16, "output_dim": 3}
    if family == "implicit":
        base.update(theta=0.5, solver={"tol": 1e-12, "max_iter": 300})
    return ModelSpec(**{**base, **fields})


def tiny_conv(family="explicit", seed=0, **fields):
    torch.manual_seed(seed)
    return build_model(conv_spec(family, **fields)).double()


@pytest.mark.parametrize("side,kernel_size,c_in,c_out", [(8, 3, 1, 4), (4, 3, 2, 3), (5, 5, 2, 2), (6, 1, 3, 2)])
def test_operator_norm_is_exact(side, kernel_size, c_in, c_out):
    torch.manual_seed(side + kernel_size)
    kernel = torch.randn(c_out, c_in, kernel_size, kernel_size, dtype=torch.float64)

    def conv(v):
        image = v.reshape(1, c_in, side, side)
        return torch.nn.functional.conv2d(image, kernel, padding=kernel_size // 2).flatten()

    matrix = jacobian(conv, torch.zeros(c_in * side * side, dtype=torch.float64))  # independent construction
    torch.testing.assert_close(conv_operator_matrix(kernel, side), matrix, rtol=0, atol=1e-14)
    exact = float(torch.linalg.svdvals(matrix)[0])
    assert conv_operator_norm(kernel, side) == pytest.approx(exact, rel=1e-12)
    assert conv_operator_norm(kernel, side) <= float(conv_operator_norm_bound(kernel, side)) * (1 + 1e-12)


def test_structure_reshapes_flat_images():
    net = tiny_conv()
    assert isinstance(net.embed, ConvEmbedding) and isinstance(net.steps[0].residual, ConvResidualFunction)
    assert net.head.in_features == 2 * 16
    x = torch.randn(5, 16, dtype=torch.float64)
    assert net(x).shape == (5, 3) and net(x.reshape(5, 1, 4, 4)).shape == (5, 3)


@pytest.mark.parametrize("family", ["explicit", "implicit"])
def test_input_and_parameter_gradients_match_finite_differences(family):
    net = tiny_conv(family, input_dim=9, depth=1, hidden=2)  # 3×3 images
    torch.manual_seed(1)
    x = torch.randn(2, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(net, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)
    assert parameter_gradcheck(net, x)


@pytest.mark.parametrize("family,activation", [("explicit", "tanh"), ("explicit", "relu"), ("implicit", "tanh")])
def test_bound_is_never_exceeded(family, activation):
    fields = {"solver": {"tol": 1e-10, "max_iter": 200}} if family == "implicit" else {}
    net = tiny_conv(family, activation=activation, h=0.5, **fields).eval()
    bound = lipschitz_bound(net)
    expected = net.embed.lipschitz_bound() * float(torch.linalg.matrix_norm(net.head.weight.detach(), 2))
    for step in net.steps:
        f = step.residual
        ell = conv_operator_norm(f.conv1.weight, 4) * conv_operator_norm(f.conv2.weight, 4)
        expected *= 1 + 0.5 * ell if family == "explicit" else (1 + 0.25 * ell) / (1 - 0.25 * ell)
    assert bound == pytest.approx(expected, rel=1e-12)
    x, x2 = torch.randn(2000, 16, dtype=torch.float64), torch.randn(2000, 16, dtype=torch.float64)
    with torch.no_grad():
        random_ratio = float(((net(x) - net(x2)).norm(dim=1) / (x - x2).norm(dim=1)).max())
    searched = largest_local_ratio(net, steps=60 if family == "explicit" else 30, dim=16)
    assert random_ratio <= bound and searched <= bound * (1 + 1e-9)
    assert searched > 1e-3 * bound


@pytest.mark.parametrize("family", ["explicit", "implicit"])
def test_save_load_roundtrip_gives_identical_outputs(tmp_path, family):
    spec = conv_spec(family, input_dim=64, channels=3, hidden=4, depth=3, solver={})
    assert_save_load_identical(spec, tmp_path, torch.rand(10, 64), seed=7)


@pytest.mark.parametrize("fields,message", [
    ({"family": "explicit", "conv": True, "spectral": {"lower": -1, "upper": 1}}, "spectral is not available"),
    ({"family": "hamiltonian", "conv": True}, "hamiltonian. is convolutional only in the image backbone"),
    ({"family": "ode", "conv": True}, "conv applies to families"),
    ({"family": "explicit", "conv": True, "width": 16}, "width does not apply to conv models"),
    ({"family": "explicit", "conv": True, "input_dim": 10}, "input_dim 10 is not a square"),
    ({"family": "explicit", "channels": 4}, "channels applies to conv models only"),
])
def test_spec_validation(fields, message):
    with pytest.raises(ValidationError, match=message):
        ModelSpec(**fields)


def test_digits_conv_example_shape_validates():
    spec = JobSpec.model_validate({
        "name": "digits-conv", "dataset": {"name": "digits"},
        "model": {"family": "explicit", "conv": True, "channels": 8, "depth": 6, "h": 0.2},
    })
    assert spec.model.conv and spec.model.work_width() > 0
