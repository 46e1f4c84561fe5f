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
