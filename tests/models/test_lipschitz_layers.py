"""1-Lipschitz gradient-flow layers (dense and conv): gradients against finite differences (float64), Jacobian
norms ≤ 1, a sound conv norm bound, a 1-Lipschitz network end to end, save/load, spec validation."""

import pytest
import torch
from model_checks import assert_every_parameter_gets_a_gradient, assert_save_load_identical, parameter_gradcheck
from pydantic import ValidationError
from torch.autograd.functional import jacobian

from core.spec import ModelSpec
from evaluation.certified import certified_accuracy
from models import build_model, lipschitz_bound
from models.lipschitz_layers import ConvGradientFlowLayer, GradientFlowLayer, conv_operator_norm_bound


def tiny_lipschitz(conv=False, activation="relu"):
    torch.manual_seed(0)
    fields = {"conv": True, "channels": 2, "hidden": 2, "input_dim": 4} if conv else {"width": 4, "hidden": 5,
                                                                                       "input_dim": 3}
    spec = ModelSpec(family="lipschitz", depth=2, activation=activation, output_dim=3, **fields)
    return build_model(spec).double()


def conv_matrix(kernel, channels, side):
    """The zero-padded convolution as an explicit matrix (columns: images of the basis vectors)."""
    basis = torch.eye(channels * side * side, dtype=kernel.dtype).reshape(-1, channels, side, side)
    out = torch.nn.functional.conv2d(basis, kernel, padding=kernel.shape[-1] // 2)
    return out.flatten(1).T


def layer_jacobian_norm(layer, x):
    return float(torch.linalg.matrix_norm(jacobian(lambda v: layer(v[None])[0], x), 2))


@pytest.mark.parametrize("conv", [False, True])
def test_input_and_parameter_gradients_match_finite_differences(conv):
    net = tiny_lipschitz(conv)
    torch.manual_seed(1)
    x = torch.randn(3, net.embed.in_features, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():  # exact norms in training and eval alike: one deterministic function, trained as certified
        torch.testing.assert_close(net.train()(x), net.eval()(x), rtol=0, atol=0)
    assert torch.autograd.gradcheck(net, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)

    names = [n for n, _ in net.named_parameters()]
    assert any("tau_logit" in n for n in names) and any("original" in n for n in names)
    assert parameter_gradcheck(net, x, names)


def test_every_parameter_trains():
    for conv in (False, True):
        net = tiny_lipschitz(conv)
        x = torch.randn(8, net.embed.in_features, dtype=torch.float64)
        assert_every_parameter_gets_a_gradient(net, net(x).square().sum())


@pytest.mark.parametrize("activation", ["relu", "tanh", "softplus", "sigmoid"])
@pytest.mark.parametrize("tau_logit", [0.0, 30.0])  # τ‖W‖² = 1 and τ‖W‖² → 2, the edge of the range
def test_dense_layer_jacobian_norm_is_at_most_one(activation, tau_logit):
    torch.manual_seed(2)
    layer = GradientFlowLayer(6, 9, activation).double().eval()
    with torch.no_grad():
        layer.weight.mul_(5.0)  # the raw scale must not matter
        layer.tau_logit.fill_(tau_logit)
    for _ in range(10):
        assert layer_jacobian_norm(layer, torch.randn(6, dtype=torch.float64)) <= 1 + 1e-6
    assert layer.lipschitz_bound() == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("tau_logit", [0.0, 30.0])
def test_conv_layer_jacobian_norm_is_at_most_one(kernel_size, tau_logit):
    torch.manual_seed(3)
    layer = ConvGradientFlowLayer(2, 3, image_size=5, kernel_size=kernel_size).double().eval()
    with torch.no_grad():
        layer.tau_logit.fill_(tau_logit)
    for _ in range(10):
        assert layer_jacobian_norm(layer, torch.randn(2 * 25, dtype=torch.float64)) <= 1 + 1e-6
    assert layer.lipschitz_bound() == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("side,kernel_size", [(3, 3), (5, 3), (8, 3), (4, 5), (6, 1)])
def test_conv_norm_bound_is_sound_and_close(side, kernel_size):
    torch.manual_seed(side + kernel_size)
    kernel = torch.randn(3, 2, kernel_size, kernel_size, dtype=torch.float64)
    exact = float(torch.linalg.matrix_norm(conv_matrix(kernel, 2, side), 2))
    bound = float(conv_operator_norm_bound(kernel, side))
    assert exact <= bound * (1 + 1e-12)
    assert bound <= 1.5 * exact  # an upper bound, not a wild one
    if kernel_size == 1:  # a 1×1 conv is the channel matrix applied per pixel: the bound is exact
        assert bound == pytest.approx(exact, rel=1e-12)


def test_conv_transpose_is_the_adjoint_of_conv():
    torch.manual_seed(5)
    kernel = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    x, z = torch.randn(1, 2, 6, 6, dtype=torch.float64), torch.randn(1, 3, 6, 6, dtype=torch.float64)
    lhs = (torch.nn.functional.conv2d(x, kernel, padding=1) * z).sum()
    rhs = (x * torch.nn.functional.conv_transpose2d(z, kernel, padding=1)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("conv", [False, True])
def test_network_is_one_lipschitz_with_pairwise_certificates(conv):
    net = tiny_lipschitz(conv).eval()
    assert lipschitz_bound(net) == pytest.approx(1.0, abs=1e-9)
    assert net.body_lipschitz_bound() == pytest.approx(1.0, abs=1e-9)
    torch.manual_seed(6)
    x = torch.randn(40, net.embed.in_features, dtype=torch.float64)
    with torch.no_grad():
        y = net(x).argmax(1)
    metrics, info = certified_accuracy(net, x, y, [1e-3])
    assert info["method"] == "pairwise" and metrics["lipschitz_bound"] == pytest.approx(1.0, abs=1e-9)
    jac = jacobian(lambda v: net(v[None])[0], x[0])
    assert float(torch.linalg.matrix_norm(jac, 2)) <= 1 + 1e-6


@pytest.mark.parametrize("conv", [False, True])
def test_save_load_roundtrip_gives_identical_outputs(tmp_path, conv):
    fields = {"conv": True, "channels": 3, "kernel_size": 3, "input_dim": 16} if conv else {"width": 6, "input_dim": 2}
    spec = ModelSpec(family="lipschitz", depth=3, activation="relu", output_dim=3, **fields)
    assert_save_load_identical(spec, tmp_path, torch.randn(10, spec.input_dim), seed=7)


@pytest.mark.parametrize("fields,message", [
    ({"h": 0.5}, "h does not apply to family 'lipschitz'"),
    ({"theta": 0.9}, "theta applies to family 'implicit' only"),
    ({"kernel_size": 5}, "kernel_size applies to conv models only"),
    ({"conv": True, "kernel_size": 4}, "kernel_size must be odd"),
    ({"conv": True, "width": 16}, "width does not apply to conv models"),
    ({"conv": True, "input_dim": 10}, "input_dim 10 is not a square"),
])
def test_spec_rejects_fields_the_family_does_not_use(fields, message):
    with pytest.raises(ValidationError, match=message):
        ModelSpec(family="lipschitz", **fields)


def test_dumped_spec_validates_again():
    spec = ModelSpec(family="lipschitz", conv=True, channels=4, kernel_size=5, input_dim=64, output_dim=10)
    assert ModelSpec.model_validate_json(spec.model_dump_json()) == spec
