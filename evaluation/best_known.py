"""Best-known robust accuracy of a classifier, per sample, over every attack that ran.

A sample counts as robust at ε only if it is classified correctly clean and *every* attack that ran at ε failed
on it (RobustBench's rule: a weaker attack never gets to overstate robustness). The headline metric per threat
model is that per-sample minimum, ``robust_<norm>_acc@ε``; each attack's own figure stays beside it
(``pgd_<norm>_acc@ε``, ``autoattack_<norm>_acc@ε``)::

    from evaluation.best_known import attack_classifier
    metrics, info, masks = attack_classifier(model, x, y, spec.evaluate, data, clean_logits, progress)
    masks["robust_linf_acc@0.1"]     # bool per test sample: robust against everything that ran
    masks["pgd_linf_acc@0.1"]        # … against PGD alone

Which attacks run (:func:`attack_classifier`):

* ``evaluate.autoattack``: the strong suite (:mod:`evaluation.autoattack`, Croce & Hein's standard protocol), each
  member on what the earlier ones failed on, plus its sanity ε;
* ``evaluate.pgd``: PGD with the cross-entropy, the cheap named option, on every clean-correct sample (its own
  figure is compared with the suite's), and once more with twice the steps at each norm's largest ε (a reliability
  check whose outcome also counts in the best-known figure).

A spec with only ``evaluate.pgd`` gets the PGD figure as its headline, marked by the ``cheap_attack_only`` flag
(:mod:`evaluation.reliability`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from core.metrics import metric_key, split
from core.spec import EvaluateSpec
from evaluation.autoattack import SuiteOutcome, suite_robust
from evaluation.pgd import pgd_robust
from evaluation.registry import CLASSIFICATION, Context, at_most, register_evaluation, same_level
from evaluation.reliability import reliability_flags

#: this evaluation's protocol revision: bump it when a change alters its numbers on purpose (core/protocol.py)
PROTOCOL_REVISION = 1

ROBUST_KIND = "robust_{norm}_acc"


@dataclass(frozen=True)
class AttackRecord:
    """One attack's per-sample outcome at one (norm, ε): ``robust`` is clean-correct and not fooled."""

    kind: str  # metric kind prefix: "pgd", "autoattack" (or "pgd_doubled": the step-doubling check)
    norm: str
    eps: float
    robust: torch.Tensor

    @property
    def name(self) -> str:
        return metric_key(f"{self.kind}_{self.norm.lower()}_acc", self.eps)


def per_sample_robust(records: list[AttackRecord], clean_correct: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-sample robust masks, by metric name: every attack's (``pgd_linf_acc@0.1`` …) and the best known
    (``robust_linf_acc@0.1``: clean-correct and robust against every record at that norm and ε). The one place that
    combines them: the headline metrics are their means (:func:`robust_metrics`)."""
    masks: dict[str, torch.Tensor] = {}
    best: dict[tuple[str, float], torch.Tensor] = {}
    for record in records:
        masks[record.name] = record.robust
        key = (record.norm, record.eps)
        best[key] = best.get(key, clean_correct) & record.robust
    for (norm, eps), robust in sorted(best.items()):
        masks[metric_key(ROBUST_KIND.format(norm=norm.lower()), eps)] = robust
    return masks


def robust_metrics(masks: dict[str, torch.Tensor], kinds: tuple[str, ...] = ("robust",)) -> dict[str, float]:
    """Accuracy (mean) of each mask whose name starts with one of ``kinds`` + ``_``."""
    return {n: float(m.float().mean()) for n, m in masks.items() if n.startswith(tuple(f"{k}_" for k in kinds))}


def solver_failures(model: nn.Module) -> dict[str, int]:
    """Forward and backward solves that missed their tolerance so far (implicit models; zeros otherwise)."""
    stats = model.solver_stats() if hasattr(model, "solver_stats") else []
    failures = [f for s in stats for f in s.failures]
    return {
        "forward": sum(f.startswith("forward") for f in failures),
        "backward": sum(f.startswith("backward") for f in failures),
    }


def attack_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    ev: EvaluateSpec,
    n_classes: int,
    valid_range: tuple[float, float] | None,
    clean_logits: torch.Tensor,
    progress: Callable[[dict], None],
) -> tuple[dict[str, float], dict, dict[str, torch.Tensor]]:
    """Run the attacks ``ev`` asks for and combine them per sample (module doc).

    Returns ``(metrics, info, masks)``: the attacks' and the best-known accuracies; ``info`` with ``autoattack``
    and ``pgd`` settings by norm, ``best_known`` (which attacks each headline figure covers) and ``reliability``
    (flags with reasons, :func:`evaluation.reliability.reliability_flags`); ``masks``: :func:`per_sample_robust`.
    """
    clean_correct = clean_logits.argmax(1) == y
    records: list[AttackRecord] = []
    info: dict = {}
    suite: dict[str, dict[float, SuiteOutcome]] = {}
    before = solver_failures(model)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    if ev.autoattack is not None:
        a = ev.autoattack
        info["autoattack"] = {}
        for norm in a.norm:
            progress({"phase": "evaluate", "step": f"autoattack_{norm}"})
            outcomes, info["autoattack"][norm] = suite_robust(
                model, x, y, norm, a.eps, n_classes, tuple(a.attacks), a.steps, a.queries, a.restarts, a.seed,
                valid_range, clean_logits, a.sanity, ev.batch_size,
            )  # fmt: skip
            suite[norm] = outcomes
            records += [AttackRecord("autoattack", norm, eps, outcomes[eps].robust) for eps in a.eps]
        seconds["autoattack"] = time.perf_counter() - start
    doubled: list[AttackRecord] = []
    start = time.perf_counter()
    if ev.pgd is not None:
        p = ev.pgd
        info["pgd"] = {}
        for norm in p.norm:
            progress({"phase": "evaluate", "step": f"pgd_{norm}"})
            found, info["pgd"][norm] = pgd_robust(
                model, x, y, norm, p.eps, p.steps, p.restarts, p.step_size, p.seed, valid_range, clean_logits,
                ev.batch_size,
            )  # fmt: skip
            records += [AttackRecord("pgd", norm, eps, robust) for eps, robust in found.items()]
            largest = max(p.eps)  # the step-doubling check, where gradient masking shows first
            twice, _ = pgd_robust(
                model, x, y, norm, [largest], 2 * p.steps, p.restarts, p.step_size, p.seed, valid_range, clean_logits,
                ev.batch_size,
            )  # fmt: skip
            doubled.append(AttackRecord("pgd_doubled", norm, largest, twice[largest]))
        seconds["pgd"] = time.perf_counter() - start  # with the step-doubling check
    after = solver_failures(model)
    masks = per_sample_robust(records + doubled, clean_correct)
    metrics = robust_metrics(masks, ("pgd", "autoattack", "robust"))
    metrics = {k: v for k, v in metrics.items() if not k.startswith("pgd_doubled_")}
    covered: dict[str, set[str]] = {}
    for r in records + doubled:
        covered.setdefault(metric_key(ROBUST_KIND.format(norm=r.norm.lower()), r.eps), set()).add(r.kind)
    info["attack_seconds"] = seconds
    info["best_known"] = {name: sorted(kinds) for name, kinds in sorted(covered.items())}
    info["reliability"] = reliability_flags(
        metrics,
        masks,
        suite,
        info.get("autoattack", {}),
        {r.norm: (r.eps, float(r.robust.float().mean())) for r in doubled},
        ev.pgd,
        {k: after[k] - before[k] for k in after},
        chance=float(torch.bincount(y).max()) / len(y),
    )
    return metrics, info, masks


#: ``info`` key of the per-sample robust masks; the runner moves them to ``RunResult.arrays`` (not into the JSON)
MASKS_KEY = "robust_masks"


def _attacks_asked(ctx: Context) -> bool:
    return ctx.spec.evaluate.pgd is not None or ctx.spec.evaluate.autoattack is not None


def attack_relations(metrics: dict[str, float]) -> dict[str, bool]:
    """Every attack's accuracy and the best known are ≤ clean accuracy (an attack may do nothing), and the best
    known ``robust_<norm>_acc@ε`` is ≤ each attack's own figure at its ε (a per-sample minimum over them)."""
    flags = {}
    for name, value in metrics.items():
        kind = split(name)[0]
        if kind.startswith(("pgd_", "autoattack_", "robust_")) and kind.endswith("_acc") and "@" in name:
            flags[f"{name}<=clean_acc"] = at_most(value, metrics["clean_acc"])
        if kind.startswith("robust_") and kind.endswith("_acc") and "@" in name:
            for attack in ("pgd", "autoattack"):
                other = same_level(name, attack + kind.removeprefix("robust"))
                if other in metrics:
                    flags[f"{name}<={other}"] = at_most(value, metrics[other])
    return flags


SMOKE = {
    "pgd": {"norm": ["Linf", "L2"], "eps": [0.1], "steps": 5},
    "autoattack": {"norm": ["Linf"], "eps": [0.1], "attacks": ["apgd-ce", "square"], "steps": 10, "queries": 50},
}


@register_evaluation(
    "attacks", CLASSIFICATION, position=20, wanted=_attacks_asked, sanity=attack_relations, smoke=SMOKE
)
def run_attacks(ctx: Context) -> None:
    """A job's ``evaluate.pgd`` and ``evaluate.autoattack``: the suite, PGD and the best-known figure per sample,
    from the clean pass's logits (robust ≤ clean then holds sample by sample, and no attack repeats that forward),
    with the reliability flags."""
    found, attack_info, masks = attack_classifier(
        ctx.model, ctx.x, ctx.y, ctx.spec.evaluate, ctx.data.num_classes, ctx.data.valid_range, ctx.clean_logits,
        ctx.progress,
    )  # fmt: skip
    ctx.metrics.update(found)
    ctx.info.update(attack_info)
    ctx.metrics["reliability_flags"] = float(len(attack_info["reliability"]["flags"]))
    ctx.per_sample.update({name: mask for name, mask in masks.items() if name in found})  # the metrics' outcomes
    ctx.info[MASKS_KEY] = masks


__all__ = ["AttackRecord", "attack_classifier", "per_sample_robust", "robust_metrics", "solver_failures"]
