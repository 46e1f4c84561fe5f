"""Robustness of regression and denoising models: MSE and PSNR, clean, under Gaussian noise, and certified.

Every number is a **mean squared error over samples and output entries** (``torch.nn.MSELoss()``'s mean), and
PSNR = 10·log10(peak²/MSE) of that MSE (one PSNR per draw, never a mean of per-sample PSNRs), with ``peak`` the
width of the dataset's declared valid range (digits: 1) or else the range of its training targets
(:attr:`evaluation.datasets.Dataset.peak`). So ``clean_psnr`` is a function of ``clean_mse`` alone and both can be
checked by hand::

    mse = ((model(x) - y) ** 2).mean()
    psnr = 10 * log10(peak**2 / mse)

Certified output bound (Murari, "Certificates"; Tsuzuku et al., 2018): if Lip₂(f) ≤ L (a sound bound,
:func:`models.lipschitz_bound`), then ‖f(x + δ) − f(x)‖₂ ≤ L‖δ‖₂ for every δ, hence for each test pair (x, y) and
every ‖δ‖₂ ≤ ε, ‖f(x + δ) − y‖₂ ≤ ‖f(x) − y‖₂ + Lε. With m output entries and d input entries this gives

* ``certified_l2_deviation_mse@ε`` = (Lε)²/m — no L2 perturbation of norm ε moves the output by more than this
  mean squared amount;
* ``certified_l2_mse@ε`` = mean_i (‖f(x_i) − y_i‖ + Lε)²/m — an upper bound on the worst-case test MSE within the
  L2 ball, so ``pgd_l2_mse@ε`` ≤ ``certified_l2_mse@ε`` always (the runner asserts it);
* ``certified_linf_mse@ε`` — the same within the L∞ ball (‖δ‖₂ ≤ √d·ε), the upper bound of ``pgd_linf_mse@ε``.

Clipping the perturbed input to a declared valid range only moves it closer to x, so the bounds hold there too.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from core.metrics import metric_key, split
from evaluation.certified import cached_bounds
from evaluation.gaussian import noisy_draws, outputs
from evaluation.pgd import pgd_regression
from evaluation.registry import REGRESSION, Context, at_most, register_evaluation, same_level, within
from models import LipschitzBoundUnavailable

#: this evaluation's protocol revision: bump it when a change alters its numbers on purpose (core/protocol.py)
# revision 2: Gaussian noise drawn one (σ, repeat) at a time (mini-batch evaluation)
PROTOCOL_REVISION = 2

MAX_PSNR = 200.0  # dB: the PSNR of an exact reconstruction (MSE = 0) is reported as this cap, never as infinity


def mse(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over samples and entries of (prediction − target)², accumulated in float64."""
    return float((prediction.double() - target.double().reshape(prediction.shape)).pow(2).mean())


def psnr(mse_value: float, peak: float) -> float:
    """10·log10(peak²/MSE) in dB, capped at :data:`MAX_PSNR` (an exact reconstruction)."""
    if mse_value <= 0:
        return MAX_PSNR
    return min(MAX_PSNR, 10.0 * math.log10(peak**2 / mse_value))


def clean_metrics(model: nn.Module, x: torch.Tensor, y: torch.Tensor, peak: float, denoising: bool) -> dict[str, float]:
    """``clean_mse`` and ``clean_psnr`` on the test set; for denoising also ``input_psnr``, the PSNR of the
    corrupted inputs themselves (the do-nothing baseline a denoiser must beat)."""
    error = mse(outputs(model, x), y)
    metrics = {"clean_mse": error, "clean_psnr": psnr(error, peak)}
    if denoising:
        metrics["input_psnr"] = psnr(mse(x, y), peak)
    return metrics


@torch.no_grad()
def gaussian_noise_regression(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    sigmas: list[float],
    repeats: int,
    seed: int = 0,
    valid_range: tuple[float, float] | None = None,
    peak: float = 1.0,
    baseline: bool = False,
    batch_size: int | None = None,
) -> dict[str, float]:
    """MSE and PSNR of the outputs on x + σ·N(0, I) against the targets, mean and std over ``repeats`` draws, for
    every σ, on :func:`evaluation.gaussian.noisy_draws` (the same noise as the classification sweep: same seed,
    same numbers; in the data's own units, clipped only to a declared ``valid_range``).

    Returns ``gaussian_mse@σ``, ``gaussian_mse_std@σ``, ``gaussian_psnr@σ``, ``gaussian_psnr_std@σ`` and, with
    ``baseline`` (denoising: inputs and targets have the same shape), ``gaussian_input_psnr@σ``, the PSNR of the
    noisy inputs themselves.
    """
    n = len(x)
    target = y.reshape(n, -1).double()
    per_draw = torch.empty(len(sigmas) * repeats, dtype=torch.float64)  # MSE of each (σ, repeat), σ-major
    inputs = torch.empty_like(per_draw) if baseline else None
    for draw, noisy in enumerate(noisy_draws(x, sigmas, repeats, seed, valid_range)):
        per_draw[draw] = (outputs(model, noisy, batch_size).reshape(n, -1).double() - target).pow(2).mean()
        if inputs is not None:
            inputs[draw] = (noisy.reshape(n, -1).double() - target).pow(2).mean()
    per_draw = per_draw.view(len(sigmas), repeats)
    inputs = inputs.view(len(sigmas), repeats) if inputs is not None else None
    metrics: dict[str, float] = {}
    for i, sigma in enumerate(sigmas):
        draws = per_draw[i].tolist()
        db = torch.tensor([psnr(v, peak) for v in draws], dtype=torch.float64)
        metrics[metric_key("gaussian_mse", sigma)] = float(per_draw[i].mean())
        metrics[metric_key("gaussian_mse_std", sigma)] = float(per_draw[i].std(unbiased=False))
        metrics[metric_key("gaussian_psnr", sigma)] = float(db.mean())
        metrics[metric_key("gaussian_psnr_std", sigma)] = float(db.std(unbiased=False))
        if inputs is not None:
            metrics[metric_key("gaussian_input_psnr", sigma)] = float(
                torch.tensor([psnr(v, peak) for v in inputs[i].tolist()], dtype=torch.float64).mean()
            )
    return metrics


@torch.no_grad()
def certified_regression(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_list: list[float]
) -> tuple[dict[str, float], dict]:
    """``lipschitz_bound``, ``certified_l2_deviation_mse@ε``, ``certified_l2_mse@ε`` and ``certified_linf_mse@ε``
    (module docstring) from a sound Lipschitz bound; the model is left in eval mode.

    Raises:
        LipschitzBoundUnavailable: the model has no sound bound.
    """
    bounds = cached_bounds(model)  # also model.eval()
    out = outputs(model, x).double()
    m, d = out[0].numel(), x[0].numel()
    error = (out - y.double().reshape(out.shape)).flatten(1).norm(dim=1)  # ‖f(x_i) − y_i‖₂
    lip = bounds.lipschitz
    metrics = {"lipschitz_bound": lip}
    for eps in eps_list:
        metrics[metric_key("certified_l2_deviation_mse", eps)] = (lip * eps) ** 2 / m
        metrics[metric_key("certified_l2_mse", eps)] = float((error + lip * eps).pow(2).mean()) / m
        metrics[metric_key("certified_linf_mse", eps)] = float((error + lip * eps * math.sqrt(d)).pow(2).mean()) / m
    return metrics, {"method": "lipschitz output bound ‖f(x+δ) − f(x)‖ ≤ L‖δ‖", "output_dim": m, "input_dim": d}


@torch.no_grad()
def rollout_mse(model: nn.Module, trajectories: torch.Tensor) -> float:
    """Reshniak & Webster's poster's trajectory error (1/(50N))·Σ_i Σ_j ‖y_j^i − z^i(0.2j)‖² (as a mean over entries,
    i.e. divided by the state size too): the model applied ``steps`` times from each true initial state, against the
    truth."""
    z = trajectories[:, 0]
    total = torch.zeros((), dtype=torch.float64, device=z.device)
    steps = trajectories.shape[1] - 1
    for j in range(1, steps + 1):
        z = model(z)
        total = total + (z.double() - trajectories[:, j].double()).pow(2).mean()
    return float(total / steps)


def _has_trajectories(ctx: Context) -> bool:
    return ctx.data.trajectories is not None


@register_evaluation(
    "rollout", ("regression",), position=5, wanted=_has_trajectories, smoke={},
    sanity=lambda metrics: within(metrics, {"rollout_mse": (0.0, math.inf)}),
)  # fmt: skip
def run_rollout(ctx: Context) -> None:
    """Lotka–Volterra: the multi-step rollout error over the test trajectories (not reported when it diverges)."""
    rollout = rollout_mse(ctx.model, ctx.data.trajectories.to(ctx.x.device))
    if math.isfinite(rollout):
        ctx.metrics["rollout_mse"] = rollout
    else:
        ctx.warn(f"rollout diverged (rollout_mse = {rollout}); not reported")


def gaussian_mse_relations(metrics: dict[str, float]) -> dict[str, bool]:
    """Errors under noise and their spreads are ≥ 0 (and not NaN)."""
    kinds = ("gaussian_mse", "gaussian_mse_std", "gaussian_psnr_std")
    return within(metrics, dict.fromkeys(kinds, (0.0, math.inf)))


@register_evaluation(
    "gaussian", REGRESSION, position=10, sanity=gaussian_mse_relations,
    smoke={"gaussian": {"sigmas": [0.0, 0.1], "repeats": 2}},
)  # fmt: skip
def run_gaussian_regression(ctx: Context) -> None:
    """A job's ``evaluate.gaussian``: MSE and PSNR under Gaussian noise per σ (denoising: also the noisy input's)."""
    ctx.step("gaussian")
    g, data = ctx.spec.evaluate.gaussian, ctx.data
    ctx.metrics.update(
        gaussian_noise_regression(
            ctx.model, ctx.x, ctx.y, g.sigmas, g.repeats, g.seed, data.valid_range, data.peak,
            baseline=data.task == "denoising", batch_size=ctx.spec.evaluate.batch_size,
        )
    )  # fmt: skip


# relative slack of the MSE relations: float32 rounding (the attack evaluates the clean point through the attack
# box's affine map)
MSE_RTOL = 1e-5
PGD_MSE_KINDS = ("pgd_linf_mse", "pgd_l2_mse")


def pgd_mse_relations(metrics: dict[str, float]) -> dict[str, bool]:
    """clean_mse ≤ pgd_<norm>_mse@ε: PGD's search includes δ = 0."""
    return {
        f"clean_mse<={name}": at_most(metrics["clean_mse"], value, MSE_RTOL)
        for name, value in metrics.items()
        if split(name)[0] in PGD_MSE_KINDS
    }


def certified_mse_relations(metrics: dict[str, float]) -> dict[str, bool]:
    """pgd_<norm>_mse@ε ≤ certified_<norm>_mse@ε: the certificate bounds the worst case PGD searches for."""
    flags = {}
    for name, value in metrics.items():
        kind = split(name)[0]
        if kind in PGD_MSE_KINDS:
            certified = kind.replace("pgd_", "certified_", 1)
            bound = metrics.get(same_level(name, certified))
            if bound is not None:
                flags[f"{name}<={certified}"] = at_most(value, bound, MSE_RTOL)
    return flags


@register_evaluation(
    "pgd", REGRESSION, position=20, sanity=pgd_mse_relations,
    smoke={"pgd": {"norm": ["Linf", "L2"], "eps": [0.05], "steps": 5}},
)  # fmt: skip
def run_pgd_regression(ctx: Context) -> None:
    """A job's ``evaluate.pgd``: the worst MSE PGD finds per norm and ε; settings by norm in ``info["pgd"]``."""
    p = ctx.spec.evaluate.pgd
    settings = {}
    for norm in p.norm:
        ctx.step(f"pgd_{norm}")
        found, settings[norm] = pgd_regression(
            ctx.model, ctx.x, ctx.y, norm, p.eps, p.steps, p.restarts, p.step_size, p.seed, ctx.data.valid_range,
            ctx.spec.evaluate.batch_size,
        )  # fmt: skip
        ctx.metrics.update(found)
    ctx.info["pgd"] = settings


@register_evaluation(
    "certified", REGRESSION, position=30, sanity=certified_mse_relations, smoke={"certified": {"eps": [0.05]}}
)
def run_certified_regression(ctx: Context) -> None:
    """A job's ``evaluate.certified``: certified bounds on the output error per norm and ε."""
    ctx.step("certified")
    try:
        eps = ctx.spec.evaluate.certified.eps
        cert_metrics, ctx.info["certified"] = certified_regression(ctx.model, ctx.x, ctx.y, eps)
    except LipschitzBoundUnavailable as exc:
        ctx.warn(f"no certified bound: {exc}")
        return
    ctx.metrics.update(cert_metrics)


__all__ = [
    "MAX_PSNR",
    "certified_regression",
    "clean_metrics",
    "gaussian_noise_regression",
    "mse",
    "outputs",
    "psnr",
    "rollout_mse",
]
