"""Leaderboard exports: CSV, and RobustBench's ``model_info`` JSON.

``GET /api/v1/leaderboard?format=csv`` and ``?format=robustbench`` (and ``robustlab leaderboard --format …``) take
the same filters, sort and cursor as the JSON leaderboard; the next page's cursor is in the ``X-Next-Cursor``
header (and a ``Link: <…>; rel="next"``).

* **CSV** (``text/csv``): one row per entry: rank, job id, name, dataset, family, task, width, depth, θ, h, the
  ranking metric and its value, then one column per metric present on the page (names sorted), the dates, and the
  key hyper-parameters as JSON.
* **RobustBench** (``application/vnd.robustlab.robustbench+json``): a JSON list with one object per entry in the
  form of RobustBench's ``model_info/<dataset>/<threat model>/<model>.json`` files (``clean_acc``,
  ``autoattack_acc`` … as percent strings with two decimals, ``"94.78"``). robustlab does **not** run AutoAttack:
  ``autoattack_acc`` (and ``reported``) hold our PGD figure (torchattacks, the job's steps and restarts: an upper
  bound on the robust accuracy, as AutoAttack's is, but from a weaker attack), which ``attack`` and ``footnote``
  say. The threat model and ε are those of the ranking metric when it is a PGD or certified one
  (``metric=pgd_l2_acc@0.5`` → ``L2``, ``"0.5"``), else each job's largest ε of PGD L∞ (L2 if it has no L∞).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from db.models import Job

CSV_MEDIA_TYPE = "text/csv"
ROBUSTBENCH_MEDIA_TYPE = "application/vnd.robustlab.robustbench+json"
CSV_FIXED = ("rank", "job_id", "name", "dataset", "family", "task", "width", "depth", "theta", "h", "metric", "value")
CSV_TAIL = ("created_at", "finished_at", "hyper_parameters")

ARCHITECTURES = {
    "explicit": "explicit ResNet (explicit Euler steps)",
    "implicit": "implicit θ-method residual network",
    "hamiltonian": "Hamiltonian (symplectic) network",
    "lipschitz": "1-Lipschitz gradient-flow network",
    "ode": "neural ODE (θ-method)",
}
PAPERS = {
    "implicit": "Reshniak & Webster, Robust learning with implicit residual networks",
    "hamiltonian": "Murari, Neural Networks as Dynamical Systems: Hamiltonian and 1-Lipschitz Networks",
    "lipschitz": "Murari, Neural Networks as Dynamical Systems: Hamiltonian and 1-Lipschitz Networks",
}
THREAT_MODELS = {"pgd_linf_acc": "Linf", "pgd_l2_acc": "L2", "certified_l2_acc": "L2"}

ROBUSTBENCH_ITEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RobustBench model_info form of one leaderboard entry (accuracies: percent, 2 decimals)",
    "properties": {
        "name": {"type": "string"},
        "link": {"type": "string", "description": "the job's page on this server"},
        "authors": {"type": "string"},
        "additional_data": {"type": "boolean"},
        "number_forward_passes": {"type": "integer"},
        "dataset": {"type": "string"},
        "venue": {"type": "string"},
        "architecture": {"type": "string"},
        "threat_model": {"type": "string", "enum": ["Linf", "L2"]},
        "eps": {"type": ["string", "null"], "description": 'ε in input units, e.g. "0.1"'},
        "clean_acc": {"type": ["string", "null"], "examples": ["94.78"]},
        "reported": {"type": ["string", "null"], "description": "our PGD figure (no paper reported one)"},
        "autoattack_acc": {"type": ["string", "null"], "description": "our PGD figure, not AutoAttack (see attack)"},
        "attack": {"type": "string", "examples": ["PGD-Linf (torchattacks), 50 steps, 2 restarts"]},
        "certified_acc": {"type": ["string", "null"], "description": "certified L2 accuracy at eps (L2 only)"},
        "footnote": {"type": "string"},
        "paper": {"type": "string"},
        "job_id": {"type": "string"},
    },
    "required": ["name", "architecture", "eps", "clean_acc", "autoattack_acc", "attack", "threat_model", "job_id"],
}


def _number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest string that reads back as the same float
    return str(value)


def leaderboard_csv(entries: Sequence[Any], metric: str) -> str:
    """The entries (``LeaderboardEntry`` objects) as CSV text, with a header row."""
    names = sorted({name for entry in entries for name in entry.metrics})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*CSV_FIXED, *names, *CSV_TAIL])
    for e in entries:
        row = [e.rank, e.job_id, e.name, e.dataset, e.family, e.task, e.width, e.depth, e.theta, e.h, metric, e.value]
        row += [e.metrics.get(name) for name in names]
        row = [_number(v) for v in row]
        row += [
            e.created_at.isoformat() if e.created_at else "",
            e.finished_at.isoformat() if e.finished_at else "",
            json.dumps(e.hyper_parameters, sort_keys=True, separators=(",", ":")),
        ]
        writer.writerow(row)
    return out.getvalue()


def percent(value: float | None) -> str | None:
    """RobustBench writes accuracies as percent strings with 2 decimals: 0.9478 → ``"94.78"``."""
    return None if value is None else f"{100.0 * value:.2f}"


def _level(name: str) -> tuple[str, float | None]:
    kind, at, level = name.partition("@")
    try:
        return kind, float(level) if at else None
    except ValueError:
        return kind, None


def _threat(metric: str, metrics: Mapping[str, float]) -> tuple[str, str | None, float | None]:
    """``(threat model, eps string, eps)`` for one entry (see the module doc)."""
    kind, eps = _level(metric)
    if kind in THREAT_MODELS and eps is not None:
        return THREAT_MODELS[kind], metric.partition("@")[2], eps
    for kind in ("pgd_linf_acc", "pgd_l2_acc"):
        levels = [(level, name) for name in metrics for k, level in [_level(name)] if k == kind and level is not None]
        if levels:
            level, name = max(levels)
            return THREAT_MODELS[kind], name.partition("@")[2], level
    return "Linf", None, None


def _architecture(entry: Any) -> str:
    hp = entry.hyper_parameters or {}
    parts = [ARCHITECTURES.get(entry.family, f"{entry.family} network")]
    details = []
    if entry.family == "implicit" and hp.get("theta") is not None:
        details.append(f"θ={hp['theta']:g}")
    if hp.get("h") is not None:
        details.append(f"h={hp['h']:g}")
    if hp.get("width") is not None:
        details.append(f"width {hp['width']}")
    if hp.get("depth") is not None:
        details.append(f"depth {hp['depth']}")
    if hp.get("conv"):
        details.append("convolutional")
    return parts[0] + (f", {', '.join(details)}" if details else "")


def _attack(threat: str, job: Job | None) -> tuple[str, str]:
    """``("PGD-Linf (torchattacks), 50 steps, 2 restarts", "torchattacks 3.5.1")`` from what the worker recorded in
    the job's info (the attack that ran; ``""`` for the version if it recorded none), else the job's spec."""
    recorded = ((job.info or {}).get("pgd") or {}).get(threat) if job is not None else None
    spec_pgd = (((job.spec or {}).get("evaluate") or {}).get("pgd") or {}) if job is not None else {}
    settings = recorded if isinstance(recorded, dict) else spec_pgd
    steps, restarts = settings.get("steps"), settings.get("restarts")
    library = str(recorded.get("library", "")) if isinstance(recorded, dict) else ""
    text = f"PGD-{threat} (torchattacks)"
    if steps is not None:
        text += f", {steps} steps"
    if restarts is not None:
        text += f", {restarts} restart{'s' if restarts != 1 else ''}"
    return text, library


def robustbench_models(
    entries: Sequence[Any], metric: str, jobs_by_id: Mapping[str, Job], job_url: str = "/jobs/{job_id}"
) -> list[dict[str, Any]]:
    """The entries (``LeaderboardEntry`` objects) as RobustBench ``model_info`` dicts (see the module doc).
    ``jobs_by_id``: the entries' jobs (for the attack settings); ``job_url``: the link, ``{job_id}`` filled in."""
    out = []
    for e in entries:
        threat, eps_text, eps = _threat(metric, e.metrics)
        kind = "pgd_linf_acc" if threat == "Linf" else "pgd_l2_acc"
        pgd = e.metrics.get(f"{kind}@{eps_text}") if eps_text is not None else None
        certified = e.metrics.get(f"certified_l2_acc@{eps_text}") if threat == "L2" and eps_text else None
        attack, library = _attack(threat, jobs_by_id.get(e.job_id))
        footnote = (
            f"robustlab job {e.job_id}. autoattack_acc and reported are robustlab's PGD accuracy ({attack}"
            f"{f', {library}' if library else ''}; ε = {eps_text} in input units), not AutoAttack: an upper bound on "
            "the robust accuracy."
            if pgd is not None
            else f"robustlab job {e.job_id}. No PGD-{threat} accuracy was measured for this job."
        )
        if certified is not None:
            footnote += f" Certified L2 accuracy at ε = {eps_text} (a sound lower bound): {percent(certified)}%."
        out.append(
            {
                "link": job_url.format(job_id=e.job_id),
                "name": e.name,
                "authors": "",
                "additional_data": False,
                "number_forward_passes": 1,
                "dataset": e.dataset,
                "venue": "N/A",
                "architecture": _architecture(e),
                "threat_model": threat,
                "eps": eps_text,
                "clean_acc": percent(e.metrics.get("clean_acc")),
                "reported": percent(pgd),
                "autoattack_acc": percent(pgd),
                "attack": attack,
                "certified_acc": percent(certified),
                "footnote": footnote,
                "paper": PAPERS.get(e.family, ""),
                "job_id": e.job_id,
            }
        )
    return out


__all__ = [
    "CSV_MEDIA_TYPE",
    "ROBUSTBENCH_ITEM_SCHEMA",
    "ROBUSTBENCH_MEDIA_TYPE",
    "leaderboard_csv",
    "percent",
    "robustbench_models",
]
