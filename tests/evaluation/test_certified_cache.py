"""The per-model cache of exact Lipschitz bounds (evaluation.certified.cached_bounds) never serves a stale bound:
it is recomputed after an optimizer step, a changed θ or h, a replaced layer or a switch to train mode, and it does
not keep a model alive."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from core.spec import ModelSpec
from evaluation.certified import _BOUNDS, cached_bounds, certified_accuracy
from models import build_model, lipschitz_bound


def model(family: str = "implicit") -> torch.nn.Module:
    torch.manual_seed(0)
    extra = {"theta": 0.5, "spectral": {"lower": -1.0, "upper": 1.0}} if family == "implicit" else {}
    spec = ModelSpec(family=family, width=4, depth=2, h=0.3, input_dim=2, output_dim=3, **extra)
    return build_model(spec)


def fresh_bound(net: torch.nn.Module) -> float:
    return lipschitz_bound(net)


@pytest.mark.parametrize("family", ["explicit", "implicit"])
def test_cached_bound_equals_the_fresh_bound_and_follows_every_change(family: str) -> None:
    net = model(family)
    first = cached_bounds(net)
    assert first.lipschitz == fresh_bound(net) and first.body == net.body_lipschitz_bound()
    assert cached_bounds(net) is first  # unchanged model: served from the cache

    opt = torch.optim.SGD(net.parameters(), lr=0.5)  # an optimizer step (in-place update)
    net.train()
    net(torch.randn(8, 2)).square().sum().backward()
    opt.step()
    after_step = cached_bounds(net)
    assert after_step is not first and after_step.lipschitz == fresh_bound(net) != first.lipschitz
    assert not any(m.training for m in net.modules()), "cached_bounds leaves the model in eval mode"

    net.steps[0].h = 0.1  # a scalar setting
    assert cached_bounds(net).lipschitz == fresh_bound(net) != after_step.lipschitz

    old = cached_bounds(net)
    net.head = torch.nn.Linear(4, 3)  # a replaced layer
    assert cached_bounds(net).lipschitz == fresh_bound(net) != old.lipschitz

    net.train()  # a model put back in train mode is re-checked (and put in eval mode) rather than trusted
    again = cached_bounds(net)
    assert not net.training and again.lipschitz == fresh_bound(net)


def test_certification_is_the_same_cold_and_warm() -> None:
    net = model()
    x, y = torch.randn(50, 2), torch.randint(0, 3, (50,))
    _BOUNDS.pop(net, None)
    cold, cold_info = certified_accuracy(net, x, y, [0.01, 0.1])
    warm, warm_info = certified_accuracy(net, x, y, [0.01, 0.1])
    assert cold == warm and torch.equal(cold_info["radius"], warm_info["radius"])


def test_the_cache_does_not_keep_a_model_alive() -> None:
    net = model()
    cached_bounds(net)
    ref = weakref.ref(net)
    del net
    gc.collect()
    assert ref() is None


def test_certification_from_the_clean_pass_logits_equals_its_own_forward() -> None:
    net = model()
    x, y = torch.randn(50, 2), torch.randint(0, 3, (50,))
    own, own_info = certified_accuracy(net, x, y, [0.01, 0.1])
    with torch.no_grad():
        logits = net(x)
    reused, reused_info = certified_accuracy(net, x, y, [0.01, 0.1], logits)
    assert reused == own and torch.equal(reused_info["radius"], own_info["radius"])
    with pytest.raises(ValueError, match="logits has 49 rows for 50 inputs"):
        certified_accuracy(net, x, y, [0.01], logits[:49])
