"""A Monte-Carlo PGD attack on the smoothed classifier, to test randomized-smoothing certificates from the other
side.

Salman, Yang, Li, Zhang, Zhang, Razenshteyn & Bubeck, "Provably Robust Deep Learning via Adversarially Trained
Smoothed Classifiers" (NeurIPS 2019), attack the smoothed classifier through its soft version
G(x)_c = E_δ[softmax(f(x + δ))_c], δ ~ N(0, σ²I), maximising the loss −log G(x')_y over the L2 ball around x
(SmoothAdv, their eq. (5)), its expectation estimated by ``samples`` noise draws per step. A point this attack
moves to a distance below a certified radius must keep its smoothed class; the test suite checks exactly that
(``tests/evaluation/test_smoothing.py``)::

    x_adv = smoothadv_pgd(model, x, y, sigma=0.25, eps=0.9 * radius)
"""

from __future__ import annotations

import torch
from torch import nn


def soft_smoothed_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """−log of the Monte-Carlo soft smoothed classifier's probability of y, (1/m) Σ_j softmax(f(x + δ_j))_y, per
    point (Salman et al., eq. (5)); ``noise`` (m, N, …) holds the draws δ_j already scaled by σ."""
    m = noise.shape[0]
    logits = model((x.unsqueeze(0) + noise).reshape(-1, *x.shape[1:]))
    probs = torch.softmax(logits, dim=1).view(m, len(x), -1).mean(dim=0)
    return -torch.log(probs.gather(1, y.view(-1, 1)).squeeze(1).clamp_min(1e-12))


def _per_point_norm(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))


def smoothadv_pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    sigma: float,
    eps: torch.Tensor | float,
    steps: int = 40,
    samples: int = 32,
    step_size: float = 2.0,
    seed: int = 0,
) -> torch.Tensor:
    """L2 PGD on −log G(x')_y (:func:`soft_smoothed_loss`): ``steps`` normalised-gradient steps of
    ``step_size``·ε/``steps``, each on ``samples`` fresh noise draws, projected onto ‖x' − x‖₂ ≤ ε (``eps``: one
    radius, or one per point). Returns x' (detached)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    radius = torch.as_tensor(eps, dtype=x.dtype, device=x.device).expand(len(x)).reshape(-1, *([1] * (x.dim() - 1)))
    alpha = step_size * radius / steps
    x0 = x.detach()
    adv = x0.clone()
    for _ in range(steps):
        noise = sigma * torch.randn((samples, *x.shape), generator=gen, dtype=x.dtype).to(x.device)
        adv.requires_grad_(True)
        loss = soft_smoothed_loss(model, adv, y, noise).sum()
        (grad,) = torch.autograd.grad(loss, adv)
        with torch.no_grad():
            adv = adv + alpha * grad / _per_point_norm(grad).clamp_min(1e-12)
            delta = adv - x0
            delta = delta * torch.clamp(radius / _per_point_norm(delta).clamp_min(1e-12), max=1.0)
            adv = (x0 + delta).detach()
    return adv


__all__ = ["smoothadv_pgd", "soft_smoothed_loss"]
