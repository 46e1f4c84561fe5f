"""Checks shared by the model tests."""

from __future__ import annotations

import torch
from torch.func import functional_call


def parameter_gradcheck(net: torch.nn.Module, x: torch.Tensor, names: list[str] | None = None) -> bool:
    """``torch.autograd.gradcheck`` (float64 finite differences) of ``net(x)`` with respect to the parameters
    ``names`` (default: all of them), each substituted by ``functional_call``."""
    names = names if names is not None else [n for n, _ in net.named_parameters()]
    leaves = tuple(net.get_parameter(n).detach().clone().requires_grad_(True) for n in names)

    def by_params(*ps: torch.Tensor) -> torch.Tensor:
        return functional_call(net, dict(zip(names, ps, strict=True)), (x.detach(),), strict=False)

    return torch.autograd.gradcheck(by_params, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


def assert_every_parameter_gets_a_gradient(net: torch.nn.Module, loss: torch.Tensor) -> None:
    """Backpropagate ``loss`` (computed by ``net``): every parameter gets a nonzero gradient (none is cut off)."""
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def assert_save_load_identical(spec, directory, x: torch.Tensor, seed: int) -> None:
    """A model built from ``spec`` (weights from ``seed``), saved with ``models.save`` and read back with
    ``models.load``, gives bit-identical outputs on ``x``."""
    from models import build_model, load, save

    torch.manual_seed(seed)
    net = build_model(spec).eval()
    save(net, spec, directory)
    loaded = load(directory)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
