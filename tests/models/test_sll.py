"""The SLL layer (Araujo et al., ICLR 2023): T dominates WWᵀ for any W and q, so each layer is 1-Lipschitz; the
reported bound is computed, not assumed, and catches a step that breaks the condition."""

from __future__ import annotations

import pytest
import torch

from core.spec import JobSpec
from evaluation.runner import run_job
from models.sll import SDPLipschitzLayer, sll_rescaling


@pytest.mark.parametrize("width,hidden", [(4, 8), (16, 5), (32, 32)])
def test_the_rescaling_dominates_the_gram_matrix(width: int, hidden: int) -> None:
    gen = torch.Generator().manual_seed(width * hidden)
    for _ in range(5):
        weight = torch.randn(hidden, width, generator=gen, dtype=torch.float64)
        log_q = torch.randn(hidden, generator=gen, dtype=torch.float64)
        t = sll_rescaling(weight, log_q)
        assert torch.linalg.eigvalsh(torch.diag(t) - weight @ weight.T).min() >= -1e-10  # T − WWᵀ ⪰ 0


def test_each_layer_is_1_lipschitz_and_its_bound_sees_a_broken_step() -> None:
    torch.manual_seed(0)
    layer = SDPLipschitzLayer(8, 12, "relu").double()
    with torch.no_grad():
        layer.log_q.normal_()
    assert layer.lipschitz_bound() <= 1 + 1e-12
    for _ in range(10):
        x = torch.randn(8, dtype=torch.float64)
        jacobian = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0], x)
        assert torch.linalg.matrix_norm(jacobian, 2) <= 1 + 1e-9
    # a step too long for its W (T four times too small): the layer expands, and the computed bound says so
    rescaling = layer.rescaling
    layer.rescaling = lambda dtype=None: rescaling(dtype) / 4
    bound = layer.lipschitz_bound()
    largest = max(
        torch.linalg.matrix_norm(torch.autograd.functional.jacobian(lambda v: layer(v[None])[0], x), 2).item()
        for x in torch.randn(20, 8, dtype=torch.float64)
    )
    assert 1 < largest <= bound + 1e-9


def test_an_sll_job_certifies_like_the_other_1_lipschitz_family() -> None:
    spec = JobSpec.model_validate({
        "name": "sll", "dataset": {"name": "spirals", "n_train": 100, "n_test": 60},
        "model": {"family": "sll", "width": 16, "depth": 4, "activation": "relu"},
        "train": {"epochs": 40, "lr": 0.02, "logit_scale": 10.0},
        "evaluate": {"gaussian": None, "pgd": {"norm": ["L2"], "eps": [0.05], "steps": 10},
                     "certified": {"eps": [0.05]}},
    })  # fmt: skip
    metrics = run_job(spec).metrics
    assert metrics["lipschitz_bound"] <= 1 + 1e-6
    assert 0 < metrics["certified_l2_acc@0.05"] <= metrics["robust_l2_acc@0.05"] <= metrics["clean_acc"]
