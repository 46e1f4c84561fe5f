"""The gate's inputs: finished runs (``result.json`` files, baselines made by ``--make-baseline``, server jobs) and
candidate runs trained or evaluated here."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from cli.backend import JobRun
from cli.check.files import CheckError, read_structured, write_file
from cli.client import format_validation_errors

BASELINE_FILE = "baseline.json"
BASELINE_KIND = "robustlab-baseline"


@dataclass
class Run:
    """The metrics of one finished run, its packed per-sample outcomes (``info.outcomes``, None for a result
    written before they were stored) and what is known of where it came from."""

    metrics: dict[str, float]
    source: str
    spec: dict[str, Any] | None = None
    job_id: str | None = None
    outcomes: dict[str, Any] | None = None

    @cached_property
    def per_sample(self) -> tuple[str | None, dict[str, np.ndarray], str | None]:
        """``(test-set fingerprint, metric → boolean outcomes, problem)``; empty when missing or malformed."""
        from evaluation.outcomes import unpack_outcomes

        if self.outcomes is None:
            return None, {}, None
        try:
            fingerprint, masks = unpack_outcomes(self.outcomes)
        except ValueError as exc:
            return None, {}, f"{self.source}: per-sample outcomes unreadable ({exc})"
        return fingerprint, masks, None

    @property
    def checkpoint(self) -> str | None:
        return self.spec.get("checkpoint") if isinstance(self.spec, dict) else None

    @property
    def trained(self) -> bool | None:
        """True when the run trained its model, False when it evaluated a checkpoint, None when unknown."""
        return None if not isinstance(self.spec, dict) else self.checkpoint is None


@dataclass
class Side:
    """The baseline or the candidate: one or more runs of the same thing."""

    label: str
    runs: list[Run]
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str | None:
        spec = self.runs[0].spec if self.runs else None
        return spec.get("name") if isinstance(spec, dict) else None

    def names(self) -> set[str]:
        return set().union(*(run.metrics for run in self.runs)) if self.runs else set()

    def values(self, metric: str) -> list[float] | None:
        """The metric in every run, or ``None`` if some run lacks it."""
        if not self.runs or any(metric not in run.metrics for run in self.runs):
            return None
        return [run.metrics[metric] for run in self.runs]

    @property
    def fixed_model(self) -> bool:
        """One model: a single run, or every run evaluating the same checkpoint (only evaluation seeds differ)."""
        checkpoints = {run.checkpoint for run in self.runs}
        return len(self.runs) == 1 or (len(checkpoints) == 1 and None not in checkpoints)

    def outcomes(self, metric: str) -> tuple[str | None, list[np.ndarray]] | None:
        """``(test-set fingerprint, per-run outcomes)`` when every run has the metric's outcomes on one test set."""
        found = [run.per_sample for run in self.runs]
        prints = {fp for fp, _, _ in found}
        if any(metric not in masks for _, masks, _ in found) or len(prints) != 1:
            return None
        return prints.pop(), [masks[metric] for _, masks, _ in found]


def metrics_of(data: Any, where: str) -> dict[str, float]:
    metrics = data.get("metrics") if isinstance(data, dict) else None
    if not isinstance(metrics, dict):
        raise CheckError(f"{where} is not a robustlab result (no 'metrics' object; expected a result.json)")
    out = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CheckError(f"{where}: metric {name!r} is not a number ({value!r})")
        out[str(name)] = float(value)
    return out


def run_of(data: Any, source: str, job_id: str | None = None) -> Run:
    """A :class:`Run` from a ``result.json`` / ``/results`` payload."""
    spec = data.get("spec") if isinstance(data, dict) else None
    info = data.get("info") if isinstance(data, dict) else None
    outcomes = info.get("outcomes") if isinstance(info, dict) else None
    return Run(
        metrics_of(data, source),
        source,
        spec if isinstance(spec, dict) else None,
        job_id,
        outcomes if isinstance(outcomes, dict) else None,
    )


def load_result_file(path: Path) -> Run:
    """A ``result.json`` (``robustlab run --out``), the directory holding one, or saved ``/results`` JSON."""
    if path.is_dir():
        path = path / "result.json"
    return run_of(read_structured(path, "result file"), str(path))


def load_runs(path: Path) -> tuple[list[Run], str]:
    """The runs of a baseline made by ``--make-baseline`` (a directory with ``baseline.json``, or that file), or the
    one run of a ``result.json``; with a label."""
    manifest = path / BASELINE_FILE if path.is_dir() else path
    if manifest.name == BASELINE_FILE and manifest.is_file():
        data = read_structured(manifest, "baseline file")
        if not isinstance(data, dict) or data.get("kind") != BASELINE_KIND or not isinstance(data.get("runs"), list):
            raise CheckError(f"{manifest} is not a baseline made by `robustlab check --make-baseline`")
        runs = [load_result_file(manifest.parent / str(rel)) for rel in data["runs"]]
        if not runs:
            raise CheckError(f"{manifest} lists no runs")
        return runs, f"{manifest.parent} ({len(runs)} runs, {data.get('seeds', 'seeds unknown')})"
    run = load_result_file(path)
    return [run], run.source


def looks_like_path(text: str) -> bool:
    return Path(text).exists() or "/" in text or os.sep in text or text.endswith((".json", ".yaml", ".yml"))


def load_candidate_spec(path: Path, checkpoint: Path | None, name: str | None):
    """The validated :class:`~core.spec.JobSpec` in ``path`` (``checkpoint`` / ``name`` applied)."""
    from core.spec import JobSpec

    data = read_structured(path, "spec file")
    if not isinstance(data, dict):
        raise CheckError(f"{path} must hold a JSON object (a job spec), not {type(data).__name__}")
    if checkpoint is not None:
        data = {**data, "checkpoint": str(checkpoint)}
    if name is not None:
        data = {**data, "name": name}
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise CheckError(f"invalid job spec {path}:\n{format_validation_errors(exc.errors())}") from None


def repeat_specs(spec, repeats: int) -> list:
    """``repeats`` copies of ``spec``; copy i uses train seed + i and Gaussian / PGD evaluation seeds + i (the
    dataset, hence the test set, stays the same). A checkpoint is not retrained: only evaluation seeds change."""
    out = []
    for i in range(repeats):
        update = spec.model_copy(deep=True)
        update.train.seed = (spec.train.seed + i) % 2**31
        if update.evaluate.gaussian is not None:
            update.evaluate.gaussian.seed = (spec.evaluate.gaussian.seed + i) % 2**31
        if update.evaluate.pgd is not None:
            update.evaluate.pgd.seed = (spec.evaluate.pgd.seed + i) % 2**31
        out.append(update)
    return out


def seeds_label(specs: Sequence) -> str:
    """``train seeds 0, 1, 2`` (or ``eval seeds …`` for a checkpoint)."""
    if specs[0].checkpoint is None:
        return "train seed" + ("s " if len(specs) > 1 else " ") + ", ".join(str(s.train.seed) for s in specs)
    eval_seeds = ", ".join(str(s.evaluate.pgd.seed if s.evaluate.pgd else i) for i, s in enumerate(specs))
    return "eval seed" + ("s " if len(specs) > 1 else " ") + eval_seeds


def run_of_job(job: JobRun, source: str) -> Run:
    """A :class:`Run` from a job the backend ran (:mod:`cli.backend`): its metrics, spec and per-sample outcomes."""
    outcomes = job.info.get("outcomes")
    outcomes = outcomes if isinstance(outcomes, dict) else None
    return Run(dict(job.metrics), source, job.spec or None, job.job_id, outcomes)


def save_runs(runs: Sequence[Run], out: Path) -> None:
    """``out/result.json`` (``out/repeat-<i>/result.json`` for several runs) of runs made on a server."""
    for i, run in enumerate(runs):
        target = out if len(runs) == 1 else out / f"repeat-{i}"
        name = run.spec.get("name") if run.spec else None
        payload = {"name": name, "job_id": run.job_id, "spec": run.spec, "metrics": run.metrics}
        if run.outcomes is not None:
            payload["info"] = {"outcomes": run.outcomes}
        write_file(target / "result.json", json.dumps(payload, indent=2, sort_keys=True), "result")


def noise_estimate(runs: Sequence[Run]) -> dict[str, dict[str, float]]:
    """metric → mean, sample standard deviation over the runs (the seed-to-seed spread) and run count."""
    out = {}
    for name in sorted(set.intersection(*(set(r.metrics) for r in runs))):
        values = [r.metrics[name] for r in runs]
        if not all(math.isfinite(v) for v in values):
            continue
        mean = math.fsum(values) / len(values)
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        out[name] = {"mean": mean, "std": std, "n": len(values)}
    return out


def write_baseline(runs: Sequence[Run], specs: Sequence, out: Path) -> Path:
    """``out/baseline.json``: the runs (``repeat-<i>/result.json``, already written) and their noise estimate."""
    rel = ["result.json"] if len(runs) == 1 else [f"repeat-{i}/result.json" for i in range(len(runs))]
    payload = {
        "kind": BASELINE_KIND,
        "name": specs[0].name,
        "spec": specs[0].model_dump(mode="json"),
        "seeds": seeds_label(specs),
        "runs": rel,
        "noise": noise_estimate(runs),
    }
    write_file(out / BASELINE_FILE, json.dumps(payload, indent=2, sort_keys=True), "baseline")
    return out / BASELINE_FILE
