"""Reliability flags of a classifier's robust accuracy: signs that an attack figure may overstate robustness.

Computed per job from what the attacks found (:func:`reliability_flags`), stored with the result's info
(``info.reliability``) and counted in the metric ``reliability_flags``; the leaderboard, the job page and the
exports show each flag with its reason. As on RobustBench, a flagged entry is marked, not hidden. The flags:

* ``cheap_attack_only``: only PGD (cross-entropy, the cheap option) ran at some threat model and ε;
* ``cheap_attack_overstates``: PGD's accuracy is more than 1 point above the strong suite's;
* ``black_box_beats_gradient``: Square (query-only) fooled ≥ 1 % of the samples on which every gradient attack
  failed, a classic sign of gradient masking (Croce & Hein, 2020; Athalye et al., 2018);
* ``not_monotone_in_eps``: an accuracy rises with ε (the ε-balls are nested: the true robust accuracy cannot);
* ``no_chance_at_large_eps``: at the suite's sanity ε (the whole data range) the accuracy stays above chance (the
  largest class share);
* ``solver_unconverged_under_attack``: an implicit model's forward or backward solves missed their tolerance while
  being attacked (gradients through an unconverged solver can mask);
* ``pgd_rises_with_steps``: PGD with twice the steps finds an accuracy more than 1 point higher at the largest ε
  (the step size 2.5·ε/steps changes with the steps, so a sample or two either way is noise, not masking).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from core.spec import PGDEval

#: PGD more than this far above the suite, or PGD with twice the steps above PGD (accuracy, 0–1), is flagged
OVERSTATE = 0.01
#: Square fooling this share of samples the gradient attacks could not is flagged
BLACK_BOX_SHARE = 0.01


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def _levels(metrics: Mapping[str, float], kind: str) -> list[tuple[float, str, float]]:
    """``[(ε, written ε, value)]`` of ``kind@ε``, by ε."""
    out = []
    for name, value in metrics.items():
        k, _, level = name.partition("@")
        if k == kind:
            out.append((float(level), level, value))
    return sorted(out)


def reliability_flags(
    metrics: Mapping[str, float],
    masks: Mapping[str, torch.Tensor],
    suite: Mapping[str, Mapping[float, object]],
    suite_settings: Mapping[str, dict],
    doubled: Mapping[str, tuple[float, float]],
    pgd: PGDEval | None,
    failures: Mapping[str, int],
    chance: float,
) -> dict:
    """The flags (module doc) as ``{"flags": [{"flag", "reason"}], "checked": [names], "unreliable": bool}``.

    Args:
        metrics: the attack and best-known accuracies (``pgd_linf_acc@0.1``, ``autoattack_…``, ``robust_…``).
        masks: per-sample robust masks by metric name (:func:`evaluation.best_known.per_sample_robust`).
        suite: by norm, ``{ε: SuiteOutcome}`` of the suite (``flipped_by`` per member).
        suite_settings: by norm, the suite's settings (``sanity``: its sanity ε and the accuracy there).
        doubled: by norm, ``(ε, accuracy)`` of PGD with twice the steps.
        pgd: the spec's PGD settings (for the reasons), or ``None``.
        failures: solves that missed their tolerance during the attacks, ``{"forward", "backward"}``.
        chance: the largest class share of the test labels.
    """
    flags: list[dict[str, str]] = []
    checked = ["not_monotone_in_eps", "solver_unconverged_under_attack"]

    def flag(name: str, reason: str) -> None:
        flags.append({"flag": name, "reason": reason})

    cheap = [n for n in metrics if n.startswith("pgd_") and f"autoattack_{n.removeprefix('pgd_')}" not in metrics]
    if pgd is not None:
        checked += ["cheap_attack_only", "pgd_rises_with_steps"]
    if cheap:
        flag("cheap_attack_only", f"only PGD with the cross-entropy ({pgd.steps} steps, {pgd.restarts} restart(s)) "
             f"ran for {', '.join(sorted(cheap))}: add evaluate.autoattack for the strong suite")  # fmt: skip
    if suite and pgd is not None:
        checked.append("cheap_attack_overstates")
        over = [
            f"{name} {_pct(value)} vs the suite's {_pct(metrics[aa])}"
            for name, value in sorted(metrics.items())
            if name.startswith("pgd_") and (aa := f"autoattack_{name.removeprefix('pgd_')}") in metrics
            and value - metrics[aa] > OVERSTATE
        ]  # fmt: skip
        if over:
            flag("cheap_attack_overstates", f"PGD is more than {_pct(OVERSTATE)} above the suite: {'; '.join(over)}")
    if any("square" in settings.get("attacks", ()) for settings in suite_settings.values()):
        checked.append("black_box_beats_gradient")
        found = []
        for norm, outcomes in suite.items():
            for eps, outcome in outcomes.items():
                square = outcome.flipped_by.get("square")
                name = f"pgd_{norm.lower()}_acc@{eps:g}"
                if square is None or f"autoattack_{name.removeprefix('pgd_')}" not in metrics:
                    continue  # the sanity ε is no threat model
                only = square & masks[name] if name in masks else square  # PGD failed there too
                if len(only) and float(only.float().mean()) >= BLACK_BOX_SHARE:
                    found.append(f"{norm} ε={eps:g}: {int(only.sum())} of {len(only)} samples")
        if found:
            flag("black_box_beats_gradient", "Square fooled samples on which every gradient attack failed "
                 f"(≥ {_pct(BLACK_BOX_SHARE)}; gradient masking?): {'; '.join(found)}")  # fmt: skip
    rising = []
    for kind in sorted({n.partition("@")[0] for n in metrics if n.startswith(("robust_", "pgd_", "autoattack_"))}):
        levels = _levels(metrics, kind)
        for (_, e0, v0), (_, e1, v1) in zip(levels, levels[1:], strict=False):
            if v1 > v0 + 1e-12:
                rising.append(f"{kind} rises from {_pct(v0)} at ε={e0} to {_pct(v1)} at ε={e1}")
    if rising:
        flag("not_monotone_in_eps", "accuracy must not rise with ε (the balls are nested): " + "; ".join(rising))
    sanity = {norm: s["sanity"] for norm, s in suite_settings.items() if "sanity" in s}
    if sanity:
        checked.append("no_chance_at_large_eps")
        high = [f"{norm} ε={s['eps']:.4g}: {_pct(s['acc'])}" for norm, s in sorted(sanity.items())
                if s["acc"] > chance + 1e-12]  # fmt: skip
        if high:
            flag("no_chance_at_large_eps", f"at the whole data range the accuracy stays above chance "
                 f"({_pct(chance)}, the largest class share): {'; '.join(high)}")  # fmt: skip
    if failures.get("forward", 0) or failures.get("backward", 0):
        flag("solver_unconverged_under_attack", f"{failures.get('forward', 0)} forward and "
             f"{failures.get('backward', 0)} backward solves missed their tolerance while attacked: gradients "
             "through an unconverged solver can mask")  # fmt: skip
    for norm, (eps, twice) in sorted(doubled.items()):
        once = metrics.get(f"pgd_{norm.lower()}_acc@{eps:g}")
        if once is not None and twice - once > OVERSTATE:
            flag("pgd_rises_with_steps", f"PGD {norm} at ε={eps:g}: {_pct(once)} with {pgd.steps} steps, "
                 f"{_pct(twice)} with {2 * pgd.steps}")  # fmt: skip
    return {"flags": flags, "checked": checked, "unreliable": bool(flags)}


__all__ = ["BLACK_BOX_SHARE", "OVERSTATE", "reliability_flags"]
