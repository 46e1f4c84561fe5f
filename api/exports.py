"""Leaderboard exports: CSV, and RobustBench's ``model_info`` JSON.

``GET /api/v1/leaderboard?format=csv`` and ``?format=robustbench`` (and ``robustlab leaderboard --format …``) take
the same filters, sort and cursor as the JSON leaderboard; the next page's cursor is in the ``X-Next-Cursor``
header (and a ``Link: <…>; rel="next"``).

* **CSV** (``text/csv``): one row per entry: rank, job id, name, dataset, family, task, width, depth, θ, h, the
  ranking metric and its value, then one column per metric present on the page (names sorted), the dates, and the
  key hyper-parameters as JSON.
* **RobustBench** (``application/vnd.robustlab.robustbench+json``): a JSON list with one object per entry in the
  form of RobustBench's ``model_info/<dataset>/<threat model>/<model>.json`` files (``clean_acc``,
  ``autoattack_acc`` … as percent strings with two decimals, ``"94.78"``). ``reported`` is robustlab's headline,
  the best-known robust accuracy (``robust_<norm>_acc@ε``: per sample, the minimum over every attack that ran; the
  PGD figure for jobs from before it existed). ``autoattack_acc`` holds that figure only when the full standard
  suite (Croce & Hein's AutoAttack protocol, ``evaluation.autoattack``) ran at that threat model and ε, and is null
  otherwise; ``attack`` and ``footnote`` say what ran, ``flags`` lists the reliability flags with their reasons
  (``unreliable``: any). The threat model and ε are those of the ranking metric when it is an attack or certified
  one (``metric=pgd_l2_acc@0.5`` → ``L2``, ``"0.5"``), else each job's largest ε of L∞ (L2 if it has no L∞).
  ``certified_acc`` is the Lipschitz-margin certificate (the network itself); ``smoothed_certified_acc`` holds,
  per σ, randomized smoothing's certified accuracy at that L2 ε (the smoothed classifier, each certificate with
  probability ≥ 1 − α; ``evaluation.smoothing``), and the footnote says which is which.

Both forms describe the entry's robustness by :func:`robustness` (one place); the CSV adds its columns
``threat_model``, ``eps``, ``robust_acc``, ``autoattack_acc``, ``attack`` and ``flags`` after the fixed ones.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from core.families import family_of
from core.metrics import is_fraction, kind_of, level_of, param_series, split, threat_model
from db.leaderboard import LeaderboardEntry
from db.models import Job

CSV_MEDIA_TYPE = "text/csv"
ROBUSTBENCH_MEDIA_TYPE = "application/vnd.robustlab.robustbench+json"
CSV_FIXED = ("rank", "job_id", "name", "dataset", "family", "task", "width", "depth", "theta", "h", "metric", "value")
CSV_ROBUST = ("threat_model", "eps", "robust_acc", "autoattack_acc", "attack", "flags")
CSV_TAIL = ("created_at", "finished_at", "hyper_parameters")

#: the kinds whose largest ε names an entry's default threat model, first present wins (their threat models:
#: the catalog's, :func:`core.metrics.threat_model`)
DEFAULT_THREAT_KINDS = ("robust_linf_acc", "pgd_linf_acc", "robust_l2_acc", "pgd_l2_acc")

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
        "reported": {"type": ["string", "null"], "description": "the best-known robust accuracy (every attack run)"},
        "autoattack_acc": {
            "type": ["string", "null"],
            "description": "the best-known robust accuracy when the full standard AutoAttack suite ran, else null",
        },
        "attack": {"type": "string", "examples": ["PGD-Linf (torchattacks), 50 steps, 2 restarts"]},
        "flags": {
            "type": "array",
            "items": {"type": "object", "properties": {"flag": {"type": "string"}, "reason": {"type": "string"}}},
            "description": "reliability flags with their reasons (evaluation.reliability)",
        },
        "unreliable": {"type": "boolean", "description": "any reliability flag"},
        "certified_acc": {
            "type": ["string", "null"],
            "description": "Lipschitz-margin certified L2 accuracy at eps (the network itself; L2 only)",
        },
        "smoothed_certified_acc": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "σ → randomized-smoothing certified L2 accuracy at eps (the smoothed classifier, "
            "probability ≥ 1 − α; L2 only)",
        },
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


def leaderboard_csv(
    entries: Sequence[LeaderboardEntry], metric: str, jobs_by_id: Mapping[str, Job] | None = None
) -> str:
    """The entries as CSV text, with a header row. ``jobs_by_id``: the entries' jobs
    (what ran and the flags, :func:`robustness`)."""
    names = sorted({name for entry in entries for name in entry.metrics})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*CSV_FIXED, *CSV_ROBUST, *names, *CSV_TAIL])
    for e in entries:
        r = robustness(e, metric, (jobs_by_id or {}).get(e.job_id))
        row = [e.rank, e.job_id, e.name, e.dataset, e.family, e.task, e.width, e.depth, e.theta, e.h, metric, e.value]
        row += [r["threat_model"], r["eps"], r["best"], r["autoattack"], r["attack"]]
        row = [_number(v) for v in row]
        row.append("; ".join(f"{f['flag']}: {f['reason']}" for f in r["flags"]))
        row += [_number(e.metrics.get(name)) for name in names]
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


def _threat(metric: str, metrics: Mapping[str, float]) -> tuple[str, str | None]:
    """``(threat model, eps as written)`` for one entry (see the module doc)."""
    threat = threat_model(metric) if is_fraction(metric) else None  # an accuracy under attack or certified
    if threat is not None and math.isfinite(level_of(metric)):
        return threat, split(metric)[1]
    for kind in DEFAULT_THREAT_KINDS:
        levels = [(level_of(name), name) for name in metrics if kind_of(name) == kind]
        levels = [(level, name) for level, name in levels if math.isfinite(level)]
        if levels:
            return threat_model(kind) or "Linf", split(max(levels)[1])[1]
    return "Linf", None


def _architecture(entry: LeaderboardEntry) -> str:
    hp = entry.hyper_parameters or {}
    family = family_of(entry.family)
    parts = [family.label if family else f"{entry.family} network"]
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


def _pgd_text(threat: str, job: Job | None) -> tuple[str, str]:
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


def _suite_text(suite: Mapping[str, Any]) -> str:
    """``"AutoAttack standard suite (apgd-ce, apgd-dlr, apgd-t, fab-t, square; 100 steps, 5000 queries)"``."""
    label = "AutoAttack standard suite" if suite.get("protocol") == "standard" else "reduced AutoAttack-style suite"
    return (
        f"{label} ({', '.join(suite.get('attacks', []))}; {suite.get('steps')} steps, {suite.get('queries')} "
        f"queries, {suite.get('restarts', 1)} restart(s))"
    )


def robustness(entry: LeaderboardEntry, metric: str, job: Job | None) -> dict[str, Any]:
    """What an export says of one entry's robustness at its threat model and ε (module doc): ``threat_model``,
    ``eps``, ``best`` (the headline: best known, or the PGD figure of an older job), ``autoattack`` (``best`` when
    the full standard suite ran there, else ``None``), ``suite`` (the suite's own figure), ``pgd``, ``attack`` (what
    ran, in words), ``library`` and ``flags``."""
    threat, eps_text = _threat(metric, entry.metrics)
    norm = threat.lower()
    at = f"@{eps_text}" if eps_text is not None else None
    figure = {kind: entry.metrics.get(f"{kind}_{norm}_acc{at}") if at else None for kind in ("robust", "autoattack",
              "pgd")}  # fmt: skip
    info = (job.info or {}) if job is not None else {}
    suite = ((info.get("autoattack") or {}).get(threat)) if figure["autoattack"] is not None else None
    pgd_text, library = _pgd_text(threat, job)
    ran = ([_suite_text(suite)] if suite else []) + ([pgd_text] if figure["pgd"] is not None else [])
    library = library or (str(suite.get("library", "")) if suite else "")
    best = figure["robust"] if figure["robust"] is not None else figure["pgd"]
    standard = bool(suite) and suite.get("protocol") == "standard"
    return {
        "threat_model": threat,
        "eps": eps_text,
        "best": best,
        "autoattack": best if standard else None,
        "suite": figure["autoattack"],
        "pgd": figure["pgd"],
        "attack": " + ".join(ran) + ("; best known per sample" if len(ran) > 1 else "") if ran else "none",
        "library": library,
        "flags": list((info.get("reliability") or {}).get("flags") or []),
    }


def robustbench_models(
    entries: Sequence[LeaderboardEntry], metric: str, jobs_by_id: Mapping[str, Job], job_url: str = "/jobs/{job_id}"
) -> list[dict[str, Any]]:
    """The entries as RobustBench ``model_info`` dicts (see the module doc).
    ``jobs_by_id``: the entries' jobs (for the attack settings); ``job_url``: the link, ``{job_id}`` filled in."""
    out = []
    for e in entries:
        r = robustness(e, metric, jobs_by_id.get(e.job_id))
        threat, eps_text = r["threat_model"], r["eps"]
        certified = e.metrics.get(f"certified_l2_acc@{eps_text}") if threat == "L2" and eps_text else None
        smoothed = {}
        if threat == "L2" and eps_text:
            for sigma, points in param_series(e.metrics, "smoothed_certified_l2_acc").items():
                at_eps = [v for level, v in points if level == float(eps_text)]
                if at_eps:
                    smoothed[sigma] = percent(at_eps[0])
        library = f", {r['library']}" if r["library"] else ""
        if r["best"] is None:
            footnote = f"robustlab job {e.job_id}. No {threat} attack accuracy was measured for this job."
        elif r["autoattack"] is not None:
            footnote = (
                f"robustlab job {e.job_id}. autoattack_acc and reported are robustlab's best-known robust accuracy "
                f"(per sample, every attack that ran: {r['attack']}{library}; ε = {eps_text} in input units): an "
                "upper bound on the robust accuracy."
            )
        else:
            footnote = (
                f"robustlab job {e.job_id}. reported is robustlab's best-known robust accuracy ({r['attack']}"
                f"{library}; ε = {eps_text} in input units), not AutoAttack's standard suite, so autoattack_acc is "
                "empty: an upper bound on the robust accuracy."
            )
        if certified is not None:
            footnote += (
                f" Certified L2 accuracy at ε = {eps_text} from Lipschitz margins (the network itself, "
                f"deterministic; a sound lower bound): {percent(certified)}%."
            )
        if smoothed:
            footnote += (
                f" Randomized smoothing (Cohen et al. 2019) certifies the smoothed classifier, not the network, each "
                f"certificate with probability ≥ 1 − α: certified L2 accuracy at ε = {eps_text} "
                + ", ".join(f"{v}% at σ = {s}" for s, v in smoothed.items())
                + "."
            )
        if r["flags"]:
            footnote += " Unreliable: " + "; ".join(f"{f['flag']} ({f['reason']})" for f in r["flags"]) + "."
        family = family_of(e.family)
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
                "reported": percent(r["best"]),
                "autoattack_acc": percent(r["autoattack"]),
                "attack": r["attack"],
                "certified_acc": percent(certified),
                "smoothed_certified_acc": smoothed,
                "flags": r["flags"],
                "unreliable": bool(r["flags"]),
                "footnote": footnote,
                "paper": family.paper if family else "",
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
    "robustness",
]
