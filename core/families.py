"""The model families' facts that every layer shares, torch-free: what a family is called in exports, the paper it
comes from, which θ-method it integrates with, and the hyper-parameters that summarise one of its specs.

::

    from core.families import FAMILIES, hyper_parameters
    FAMILIES["implicit"].label              # "implicit θ-method residual network"
    FAMILIES["explicit"].theta({"theta": None})   # 0.0: explicit Euler is the θ-method with θ = 0
    hyper_parameters(stored_spec)           # {"width": 16, "depth": 10, "theta": 0.5, "h": 0.3, …}

The networks themselves are built by :mod:`models.families` (the same names; a test keeps the two registries and the
spec's ``family`` names in step).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

RESHNIAK_WEBSTER = "Reshniak & Webster, Robust learning with implicit residual networks"
MURARI = "Murari, Neural Networks as Dynamical Systems: Hamiltonian and 1-Lipschitz Networks"
ARAUJO = "Araujo, Havens, Delattre, Allauzen & Hu, A Unified Algebraic Perspective on Lipschitz Neural Networks"


def _no_theta(_model: Mapping[str, Any]) -> float | None:
    return None


def _spec_theta(model: Mapping[str, Any]) -> float | None:
    return model.get("theta")


def _no_extras(_model: Mapping[str, Any]) -> dict[str, Any]:
    return {}


def _solver(model: Mapping[str, Any]) -> dict[str, Any]:
    solver = model.get("solver") or {}
    return {"solver": f"{solver.get('forward')}/{solver.get('backward')}"}


def _ode_extras(model: Mapping[str, Any]) -> dict[str, Any]:
    """The neural ODE's step is h = t_final / depth (its stored ``h`` is the unused default)."""
    t_final, depth = model.get("t_final"), model.get("depth")
    h = t_final / depth if isinstance(t_final, (int, float)) and depth else None
    return {"t_final": t_final, "h": h, **_solver(model)}


@dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
        name: the spec's ``model.family``.
        label: the architecture's name in exports (RobustBench ``architecture``).
        paper: where the family comes from (author, title), or ``""``.
        theta: the θ of the θ-method its steps integrate with, from the spec's model section (``None``: not a
            θ-method, e.g. symplectic or gradient-flow steps).
        extras: family-specific hyper-parameters of a stored spec's model section (added to the common ones).
    """

    name: str
    label: str
    paper: str = ""
    theta: Callable[[Mapping[str, Any]], float | None] = field(default=_no_theta)
    extras: Callable[[Mapping[str, Any]], dict[str, Any]] = field(default=_no_extras)


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Add a family's facts (once)."""
    if family.name in FAMILIES:
        raise ValueError(f"model family {family.name!r} is registered twice")
    FAMILIES[family.name] = family
    return family


register_family(Family("explicit", "explicit ResNet (explicit Euler steps)", theta=lambda _model: 0.0))
register_family(Family("implicit", "implicit θ-method residual network", RESHNIAK_WEBSTER, _spec_theta, _solver))
register_family(Family("ode", "neural ODE (θ-method)", RESHNIAK_WEBSTER, _spec_theta, _ode_extras))
register_family(Family("hamiltonian", "Hamiltonian (symplectic) network", MURARI))
register_family(Family("lipschitz", "1-Lipschitz gradient-flow network", MURARI))
register_family(Family("sll", "SDP-based Lipschitz (SLL) network", ARAUJO))


def family_of(name: str | None) -> Family | None:
    return FAMILIES.get(name) if name else None


def hyper_parameters(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The key hyper-parameters of a stored spec (a ``JobSpec`` dumped to JSON): architecture (width, depth, θ, h,
    and what the family adds) and training."""
    model = spec.get("model") or {}
    train = spec.get("train") or {}
    family = family_of(model.get("family"))
    out: dict[str, Any] = {
        "width": model.get("width"),
        "depth": model.get("depth"),
        "theta": family.theta(model) if family else model.get("theta"),
        "h": model.get("h"),
        "hidden": model.get("hidden"),
        "activation": model.get("activation"),
        "epochs": train.get("epochs"),
        "lr": train.get("lr"),
        "optimizer": train.get("optimizer"),
    }
    if family is not None:
        out.update(family.extras(model))
    regularizers = train.get("regularizers") or {}
    named = sorted(name for name, value in regularizers.items() if value and name != "stochastic")
    if named:
        out["regularizers"] = named
    if model.get("spectral"):
        out["spectral"] = [model["spectral"].get("lower"), model["spectral"].get("upper")]
    if model.get("conv"):
        out.update(conv=True, channels=model.get("channels"), kernel_size=model.get("kernel_size"))
        if model.get("stages"):  # the image backbone: channels and depth live in the stages
            stages = model["stages"]
            out.update(
                channels=[stage.get("channels") for stage in stages],
                depth=sum(stage.get("depth") or 0 for stage in stages),
                stages=len(stages),
                downsample=model.get("downsample"),
            )
    stochastic = regularizers.get("stochastic") or None
    if stochastic:
        out["stochastic_sigma"] = stochastic.get("sigma")
    if spec.get("checkpoint"):
        out["checkpoint"] = spec["checkpoint"]
    return out


__all__ = ["FAMILIES", "Family", "family_of", "hyper_parameters", "register_family"]
