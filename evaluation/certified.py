"""Certified L2 accuracy from Lipschitz margins (Murari, "Neural Networks as Dynamical Systems: Hamiltonian and
1-Lipschitz Networks", margin certificate; Tsuzuku et al., 2018).

If the logit map f is L-Lipschitz in L2 and M = f_y − max_{k≠y} f_k, no perturbation with ‖δ‖₂ ≤ ε changes the
class when M > √2·L·ε. For a linear head W on a body with Lipschitz constant L_body, the pairwise bound
min_k (f_y − f_k) / (L_body‖w_y − w_k‖) is never smaller (since ‖w_y − w_k‖ ≤ √2‖W‖₂) and is used when available.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from core.metrics import metric_key, split
from evaluation.registry import CLASSIFICATION, Context, at_most, register_evaluation, same_level
from models import LipschitzBoundUnavailable
from models.lipschitz import lipschitz_bounds

#: this evaluation's protocol revision: bump it when a change alters its numbers on purpose (core/protocol.py)
PROTOCOL_REVISION = 1

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)

# model → (plan, state fingerprint, Bounds, tensors kept alive): exact spectral norms cost far more than a forward
# of a small model, and a model certified several times (repeated evaluation, the benchmark) keeps its weights.
_BOUNDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SCALARS = frozenset({bool, int, float, str, tuple, type(None)})


@dataclass(frozen=True)
class Bounds:
    """What certification needs from the weights alone: ``lipschitz`` = :func:`models.lipschitz_bound`,
    ``body`` = ``model.body_lipschitz_bound()`` (None without one) and ``head_pair_norms`` = ‖w_i − w_j‖ for the
    rows of a linear head (None without one)."""

    lipschitz: float
    body: float | None
    head_pair_norms: torch.Tensor | None


Plan = list[tuple[nn.Module | None, tuple[str, ...]]]


def _plan(model: nn.Module) -> Plan:
    """Every module of the model with the names of its scalar settings (h, θ, spectral limits, training…). The
    root is stored as ``None``: the cache's value must not refer to its weak key, or the model would never be
    freed."""
    plan: Plan = []
    for module in model.modules():
        keys = tuple(k for k, v in vars(module).items() if k[0] != "_" and type(v) in _SCALARS)
        plan.append((None if module is model else module, keys))
    return plan


def _fingerprint(model: nn.Module, plan: Plan) -> tuple[tuple, tuple, tuple]:
    """``(structure, state, tensors)``. ``structure`` (each module's children) changes when a submodule is replaced;
    ``state`` whenever a parameter or buffer is replaced or updated in place (``_version`` counts in-place writes,
    e.g. optimizer steps), a module switches train/eval, or a scalar setting (h, θ, spectral limits…) is reassigned.
    ``tensors`` are the parameters and buffers fingerprinted. It runs on every certification, so it walks a flat
    list prepared once rather than the module tree."""
    structure: list = []
    state: list = []
    tensors: list = []
    for module, keys in plan:
        attrs = (model if module is None else module).__dict__
        structure.append(tuple(map(id, attrs["_modules"].values())))
        for group in (attrs["_parameters"], attrs["_buffers"]):
            for t in group.values():
                if t is not None:
                    state.append((id(t), t._version))
                    tensors.append(t)
        state.append(tuple(attrs.get(k) for k in keys))
    return tuple(structure), tuple(state), tuple(tensors)


def cached_bounds(model: nn.Module) -> Bounds:
    """The model's :class:`Bounds`, computed once per model state, and the model put in eval mode.

    The numbers are exactly those of :func:`models.lipschitz_bound` and ``body_lipschitz_bound``; only their
    recomputation is skipped while the model's parameters, buffers, submodules, modes and scalar settings are
    unchanged (the fingerprint is taken in eval mode, so a hit also proves every submodule is in eval mode), so
    they stay sound. After a change of weights, modes or settings alone (same submodules) the module list is
    reused rather than walked again.

    Raises:
        LipschitzBoundUnavailable: the model has no sound bound.
    """
    hit = _BOUNDS.get(model)
    plan = fingerprint = None
    if hit is not None:
        fingerprint = _fingerprint(model, hit[0])
        if fingerprint[:2] == hit[1]:
            return hit[2]
        if fingerprint[0] == hit[1][0]:  # the same modules: only weights, modes or settings changed
            plan = hit[0]
    if plan is None:
        plan = _plan(model)
        fingerprint = None
    if any((model if module is None else module).training for module, _ in plan):
        model.eval()
        fingerprint = None
    structure, state, alive = fingerprint or _fingerprint(model, plan)
    # the cache keeps the tensors it fingerprinted (alive) alive, so a replaced tensor never gets a recycled id()
    bounds = compute_bounds(model)
    _BOUNDS[model] = (plan, (structure, state), bounds, alive)
    return bounds


def compute_bounds(model: nn.Module) -> Bounds:
    """The model's :class:`Bounds` from its current weights (exact spectral norms), with no cache: what a job,
    which certifies its freshly trained model once, pays. :func:`cached_bounds` adds the cache.

    Raises:
        LipschitzBoundUnavailable: the model has no sound bound.
    """
    with parametrize.cached():  # each normalised weight is computed once for all the bounds
        lipschitz, body_bound = lipschitz_bounds(model)  # each layer's exact norm once
        head = getattr(model, "head", None)
        pair_norms = head_pair_norms(head.weight) if isinstance(head, nn.Linear) else None
    return Bounds(lipschitz, body_bound, pair_norms)


def head_pair_norms(head_weight: torch.Tensor) -> torch.Tensor:
    """‖w_i − w_j‖ for every pair of rows of a linear head's weight, (K, K) in float64."""
    w = head_weight.detach().double()
    return (w[:, None, :] - w[None, :, :]).norm(dim=2)


def _margins(logits: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(labels, f_y − f_k for every class k) as NumPy: margins are small N×K arrays, cheaper and more precise in
    float64 NumPy than as a chain of tensor ops."""
    z = logits.detach().cpu().double().numpy()
    labels = y.detach().cpu().numpy()
    return labels, z[np.arange(len(labels)), labels][:, None] - z


def margin_radius(logits: torch.Tensor, y: torch.Tensor, lipschitz: float) -> torch.Tensor:
    """Certified radius M / (√2·L) per sample (0 where misclassified), float64 on the CPU."""
    labels, gap = _margins(logits, y)
    gap[np.arange(len(labels)), labels] = np.inf
    return torch.from_numpy(np.maximum(gap.min(axis=1) / (math.sqrt(2) * lipschitz), 0.0))


def pairwise_radius(
    logits: torch.Tensor,
    y: torch.Tensor,
    head_weight: torch.Tensor | None,
    body_lipschitz: float,
    pair_norms: torch.Tensor | None = None,
) -> torch.Tensor:
    """min_{k≠y} (f_y − f_k) / (L_body·‖w_y − w_k‖) per sample (0 where misclassified), float64 on the CPU.

    ``pair_norms`` (K, K) = :func:`head_pair_norms` of ``head_weight``, when given, saves computing them. A class whose
    head row equals w_y never overtakes y if f_y > f_k there (its gap is constant): radius ∞ against it, else 0.
    """
    labels, gap = _margins(logits, y)
    if pair_norms is None:
        pair_norms = head_pair_norms(head_weight)
    norms = pair_norms.detach().cpu().numpy()[labels]  # (N, K)
    ratio = np.divide(gap, body_lipschitz * norms, out=np.where(gap > 0, np.inf, 0.0), where=norms > 0)
    ratio[np.arange(len(labels)), labels] = np.inf
    return torch.from_numpy(np.maximum(ratio.min(axis=1), 0.0))


def linear_quantiles(values: torch.Tensor, levels: tuple[float, ...]) -> list[float]:
    """The quantiles of a 1-D tensor at ``levels`` with linear interpolation between order statistics (numpy's and
    torch's default method, equal to rounding): ``np.interp`` on the sorted values, a fraction of ``np.quantile``'s
    per-call cost."""
    ordered = np.sort(values.double().numpy())
    return np.interp(np.asarray(levels) * (len(ordered) - 1), np.arange(len(ordered)), ordered).tolist()


@torch.no_grad()
def certified_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps_list: list[float],
    logits: torch.Tensor | None = None,
    bounds: Bounds | None = None,
    per_sample: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, float], dict]:
    """``certified_l2_acc@ε`` for each ε, ``lipschitz_bound`` and radius quantiles, from a sound bound.
    ``per_sample``, when given, receives each ε's per-sample certified mask (radius > ε).

    The model is put in eval mode (unless both ``logits`` and ``bounds`` are given: then it is not run). Its bounds
    are ``bounds`` when given (:func:`compute_bounds` of the model as it is), else :func:`cached_bounds` (computed
    once per weights). ``logits``, when given, are the eval-mode model's outputs on ``x`` already computed (the
    evaluation's clean pass): certification then costs the bounds and the margins, not another forward. Radii are
    float64, on the CPU.

    Raises:
        LipschitzBoundUnavailable: the model has no sound bound.
    """
    if bounds is None:
        bounds = cached_bounds(model)  # also model.eval()
    elif logits is None:
        model.eval()
    if logits is None:
        logits = model(x)
    elif logits.shape[0] != x.shape[0]:
        raise ValueError(f"logits has {logits.shape[0]} rows for {x.shape[0]} inputs")
    if bounds.body is not None and bounds.head_pair_norms is not None:
        # never below the margin radius (‖w_y − w_k‖ ≤ √2‖W‖₂, module docstring), so it alone is the certificate
        radius, method = pairwise_radius(logits, y, None, bounds.body, bounds.head_pair_norms), "pairwise"
    else:
        radius, method = margin_radius(logits, y, bounds.lipschitz), "margin"
    metrics = {"lipschitz_bound": bounds.lipschitz}
    # float32 means, as every accuracy (clean, PGD) is taken: equal counts give equal numbers for the sanity check
    masks = radius.numpy()[None, :] > np.asarray(eps_list)[:, None]
    certified = masks.mean(axis=1, dtype=np.float32)
    for epsilon, accuracy, mask in zip(eps_list, certified.tolist(), masks, strict=True):
        metrics[metric_key("certified_l2_acc", epsilon)] = accuracy
        if per_sample is not None:
            per_sample[metric_key("certified_l2_acc", epsilon)] = torch.from_numpy(mask)
    for level, value in zip(QUANTILES, linear_quantiles(radius, QUANTILES), strict=True):
        metrics[metric_key("certified_radius_q", level)] = value
    return metrics, {"method": method, "radius": radius}


#: ``info`` key of the per-sample certified radii; the runner moves them to ``RunResult.arrays`` (not into the JSON)
RADIUS_KEY = "certified_radius"


def certified_relations(metrics: dict[str, float]) -> dict[str, bool]:
    """``certified_l2_acc@ε`` ≤ clean accuracy and ≤ every attack's L2 accuracy at ε: a certificate no attack may
    beat (the soundness check of every job)."""
    flags = {}
    for name, value in metrics.items():
        if split(name)[0] == "certified_l2_acc":
            flags[f"{name}<=clean_acc"] = at_most(value, metrics["clean_acc"])
            for attack in ("pgd_l2_acc", "autoattack_l2_acc", "robust_l2_acc"):
                attacked = metrics.get(same_level(name, attack))
                if attacked is not None:
                    flags[f"{name}<={attack}"] = at_most(value, attacked)
    return flags


@register_evaluation(
    "certified", CLASSIFICATION, position=30, sanity=certified_relations, smoke={"certified": {"eps": [0.05, 0.1]}}
)
def run_certified(ctx: Context) -> None:
    """A job's ``evaluate.certified``: certified L2 accuracy per ε from the bounds of the weights (a job certifies
    its model once: no cache to check or fill) and the clean pass's margins; 21 quantiles of the radii."""
    from evaluation.plots import radius_quantiles

    ctx.step("certified")
    try:
        bounds = compute_bounds(ctx.model)
        cert_metrics, cert_info = certified_accuracy(
            ctx.model, ctx.x, ctx.y, ctx.spec.evaluate.certified.eps, ctx.clean_logits, bounds, ctx.per_sample
        )
    except LipschitzBoundUnavailable as exc:
        ctx.warn(f"no certified accuracy: {exc}")
        return
    ctx.metrics.update(cert_metrics)
    radius = cert_info["radius"]
    ctx.info["certified"] = {"method": cert_info["method"], "radius_quantiles": radius_quantiles(radius.tolist())}
    ctx.info[RADIUS_KEY] = radius


__all__ = [
    "Bounds",
    "LipschitzBoundUnavailable",
    "cached_bounds",
    "certified_accuracy",
    "compute_bounds",
    "head_pair_norms",
    "linear_quantiles",
    "margin_radius",
    "pairwise_radius",
]
