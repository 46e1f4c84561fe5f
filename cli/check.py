"""``robustlab check``: the CI robustness regression gate.

Compare a **candidate** against a **baseline** under a **policy** and exit 0 (pass), 1 (a regression) or 2 (bad
usage, unreadable input, a metric missing on one side, a candidate run that failed)::

    # candidate trained in-process from a spec, baseline a result.json written by `robustlab run --out`
    robustlab check examples/spirals-explicit.json --baseline baseline/result.json \\
        --max-drop clean_acc=0.01 --max-drop pgd_linf_acc@0.1=0.02 --junit check.xml --summary check.md

    # weights evaluated with a spec (spec field `checkpoint`), baseline the newest succeeded job named "main"
    robustlab check spec.json --checkpoint runs/pr --baseline-tag main --server http://ci:8000 --policy policy.yaml

    # noise-aware: 3 training / evaluation seeds, a metric regresses only if the drop beats tol + k·σ/√N
    robustlab check spec.json --repeats 3 --baseline baseline/result.json --max-drop 'pgd_*=0.02'

Candidate (one of): ``SPEC`` trained here with :func:`evaluation.runner.run_job`, or on ``--server`` through the
REST API (``--local`` keeps it here); ``SPEC --checkpoint DIR`` evaluates stored weights instead of training;
``--candidate result.json`` (repeatable) reads finished runs.

Baseline (optional when the policy only has absolute bounds): ``--baseline`` a ``result.json`` (or the ``run --out``
directory holding it) or a job id on the server, repeatable (their mean and spread are used); or ``--baseline-tag
NAME``, the newest succeeded job on the server whose spec ``name`` is NAME.

Policy: ``--max-drop METRIC=TOL`` (``TOL`` absolute, or ``5%`` of the baseline value), ``--min METRIC=FLOOR``,
``--max METRIC=CEILING``, or ``--policy FILE`` (JSON / YAML: ``{"max_drop": {...}, "min": {...}, "max": {...},
"direction": {...}, "k": 2, "baseline_spread": "zero"}``). ``METRIC`` may be a glob (``pgd_*``). Whether a
"drop" is a fall or a rise comes from :data:`DIRECTION_BY_PREFIX` (accuracies: higher is better;
``lipschitz_bound``, losses, ``*_seconds``: lower).

Noise: with N candidate runs of mean c and sample standard deviation s (and M baseline runs of mean b and spread
s_b), a higher-is-better metric regresses when ``b − c > tol + k·√(s²/N + s_b²/M)``. For one baseline run s_b is
taken as 0 (``--baseline-spread zero``, the default: the allowance is ``k·s/√N``) or as s (``--baseline-spread
candidate``: ``k·s·√(1/N + 1)``, right when the baseline run is itself one noisy draw). Floors and ceilings get
``k·s/√N``. k defaults to 2. ``docs/ci.md`` has the false-alarm rates measured with both.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console
from rich.table import Table

from cli.client import ApiError, RobustlabClient, format_validation_errors
from cli.display import metric_sort_key

console = Console()
err_console = Console(stderr=True)

HIGHER, LOWER = "higher", "lower"
Direction = Literal["higher", "lower"]
RuleKind = Literal["max_drop", "min", "max"]
BaselineSpread = Literal["zero", "candidate"]
DEFAULT_K = 2.0
EPS = 1e-12  # float slack: equal numbers never fail a zero tolerance

# Which way is better, by the metric's base name (the part before "@"). First match wins, so the more specific
# prefixes come first; a base name ending in "_seconds" is lower-is-better, one ending in "_acc" higher-is-better.
DIRECTION_BY_PREFIX: tuple[tuple[str, Direction], ...] = (
    ("gaussian_acc_std", LOWER),  # the spread of the noisy accuracy, not an accuracy
    ("clean_acc", HIGHER),
    ("gaussian_acc", HIGHER),
    ("pgd_", HIGHER),
    ("certified_", HIGHER),  # certified_l2_acc@ε, certified_radius_q@q
    ("train_acc", HIGHER),
    ("psnr", HIGHER),
    ("mse", LOWER),
    ("lipschitz_bound", LOWER),
    ("train_loss", LOWER),
    ("solver_", LOWER),  # iterations, residual, failures
    ("pnp_residual", LOWER),  # plug-and-play: last relative step
    ("pnp_denoiser_lipschitz", LOWER),
    ("pnp_", HIGHER),  # pnp_psnr@σ, pnp_monotone@σ, pnp_averaged
)
# Checked before the prefixes (pgd_linf_mse is an error, not an accuracy): spreads and errors are lower-is-better,
# PSNRs higher-is-better.
DIRECTION_BY_SUFFIX: tuple[tuple[str, Direction], ...] = (
    ("_std", LOWER),  # gaussian_acc_std, gaussian_mse_std, gaussian_psnr_std: spreads over draws
    ("_mse", LOWER),  # clean_mse, gaussian_mse, pgd_linf_mse, certified_l2_mse, rollout_mse, train_mse …
    ("_psnr", HIGHER),  # clean_psnr, gaussian_psnr, pnp_psnr, input_psnr …
)


class CheckError(Exception):
    """Bad usage or unusable input: the gate exits 2 with this message."""


def metric_direction(name: str, overrides: Mapping[str, Direction] | None = None) -> Direction | None:
    """``"higher"`` or ``"lower"`` (is better) for a flat metric name, or ``None`` when the table does not know it.

    ``overrides`` (a policy file's ``direction``) maps names or globs to a direction and wins over the table."""
    for pattern, direction in (overrides or {}).items():
        if fnmatch.fnmatchcase(name, pattern):
            return direction
    base = name.partition("@")[0]
    if base.endswith("_seconds"):
        return LOWER
    for suffix, direction in DIRECTION_BY_SUFFIX:
        if base.endswith(suffix):
            return direction
    for prefix, direction in DIRECTION_BY_PREFIX:
        if base.startswith(prefix):
            return direction
    if base.endswith("_acc"):
        return HIGHER
    return None


# ---------------------------------------------------------------------------------------------------- policy
_METRIC_RE = re.compile(r"^[A-Za-z0-9_*?\[\]]+(@[A-Za-z0-9_.+*?-]+)?$")
OPTION_OF = {"max_drop": "--max-drop", "min": "--min", "max": "--max"}


@dataclass(frozen=True)
class Rule:
    """One bound on one metric (or a glob of metrics): ``max_drop`` relative to the baseline, or an absolute
    ``min`` (floor) / ``max`` (ceiling) on the candidate."""

    kind: RuleKind
    metric: str
    value: float
    relative: bool = False  # max_drop given as "5%": value is a fraction of |baseline|

    @property
    def is_pattern(self) -> bool:
        return any(c in self.metric for c in "*?[")

    def __str__(self) -> str:
        shown = f"{self.value * 100:g}%" if self.relative else f"{self.value:g}"
        return f"{OPTION_OF[self.kind]} {self.metric}={shown}"


def parse_rule(kind: RuleKind, text: str) -> Rule:
    """``"pgd_linf_acc@0.1=0.02"`` → ``Rule("max_drop", "pgd_linf_acc@0.1", 0.02)``; ``"clean_acc=5%"`` is relative.

    Raises:
        CheckError: not ``METRIC=NUMBER``, a malformed metric name, a negative or non-finite tolerance.
    """
    option = OPTION_OF[kind]
    metric, sep, raw = text.partition("=")
    metric, raw = metric.strip(), raw.strip()
    if not sep or not metric or not raw:
        raise CheckError(f"{option} expects METRIC=VALUE (e.g. {option} pgd_linf_acc@0.1=0.02), got {text!r}")
    return _make_rule(kind, metric, raw, f"{option} {text!r}")


def _make_rule(kind: RuleKind, metric: str, raw: str | float, where: str) -> Rule:
    if not _METRIC_RE.match(metric):
        raise CheckError(f"{where}: {metric!r} is not a metric name (e.g. clean_acc, pgd_linf_acc@0.1, pgd_*)")
    relative = isinstance(raw, str) and raw.endswith("%")
    if relative and kind != "max_drop":
        raise CheckError(f"{where}: a percentage applies to --max-drop only (floors and ceilings are absolute)")
    number = raw[:-1] if relative else raw
    try:
        value = float(number)
    except (TypeError, ValueError):
        raise CheckError(f"{where}: {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise CheckError(f"{where}: the value must be finite, got {raw!r}")
    if kind == "max_drop" and value < 0:
        raise CheckError(f"{where}: a tolerance must be ≥ 0, got {raw!r}")
    return Rule(kind, metric, value / 100 if relative else value, relative)


class PolicyFile(BaseModel):
    """``--policy FILE`` (JSON or YAML)."""

    model_config = ConfigDict(extra="forbid")

    max_drop: dict[str, float | str] = Field(default_factory=dict, description="metric → tolerance (or 'N%')")
    min: dict[str, float] = Field(default_factory=dict, description="metric → absolute floor")
    max: dict[str, float] = Field(default_factory=dict, description="metric → absolute ceiling")
    direction: dict[str, Direction] = Field(default_factory=dict, description="metric → higher / lower is better")
    k: float | None = Field(None, ge=0, le=100, description="noise multiplier (default 2)")
    baseline_spread: BaselineSpread | None = Field(None, description="spread assumed for a one-run baseline")


@dataclass
class Policy:
    """``baseline_spread``: what to assume about the noise of a baseline of one run. ``"zero"`` treats it as exact
    (allowance k·s/√N, the rule of the issue); ``"candidate"`` treats it as one more draw with the candidate's
    spread s (allowance k·s·√(1/N + 1)). A baseline of several runs always uses its own spread."""

    rules: list[Rule]
    directions: dict[str, Direction] = field(default_factory=dict)
    k: float = DEFAULT_K
    baseline_spread: BaselineSpread = "zero"


def load_policy_file(path: Path) -> PolicyFile:
    data = _read_structured(path, "policy file")
    try:
        return PolicyFile.model_validate(data)
    except ValidationError as exc:
        raise CheckError(f"invalid policy file {path}:\n{format_validation_errors(exc.errors())}") from None


def build_policy(
    policy_file: Path | None,
    max_drop: Sequence[str] = (),
    mins: Sequence[str] = (),
    maxs: Sequence[str] = (),
    k: float | None = None,
    baseline_spread: BaselineSpread | None = None,
) -> Policy:
    """The policy file's rules, then the command line's (which replace a file rule for the same kind and metric)."""
    rules: dict[tuple[str, str], Rule] = {}
    directions: dict[str, Direction] = {}
    file_k = file_spread = None
    if policy_file is not None:
        spec = load_policy_file(policy_file)
        for kind in ("max_drop", "min", "max"):
            for metric, raw in getattr(spec, kind).items():
                rule = _make_rule(kind, metric, raw, f"{policy_file}: {kind}.{metric}")
                rules[(kind, metric)] = rule
        directions, file_k, file_spread = dict(spec.direction), spec.k, spec.baseline_spread
    for kind, texts in (("max_drop", max_drop), ("min", mins), ("max", maxs)):
        for text in texts:
            rule = parse_rule(kind, text)
            rules[(kind, rule.metric)] = rule
    if not rules:
        raise CheckError(
            "no policy: give --max-drop METRIC=TOL (e.g. --max-drop clean_acc=0.01), --min / --max, or --policy FILE"
        )
    k = k if k is not None else (file_k if file_k is not None else DEFAULT_K)
    return Policy(list(rules.values()), directions, k, baseline_spread or file_spread or "zero")


# ---------------------------------------------------------------------------------------------------- inputs
def _read_structured(path: Path, what: str) -> Any:
    """JSON (or YAML for .yaml / .yml) from ``path``; :class:`CheckError` naming the problem otherwise."""
    if not path.exists():
        raise CheckError(f"{what} not found: {path}")
    if not path.is_file():
        raise CheckError(f"{what} is not a file: {path}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckError(f"cannot read {what} {path}: {exc}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CheckError(f"{path} is not valid YAML: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckError(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None


@dataclass
class Run:
    """The metrics of one finished run, with what is known of where it came from."""

    metrics: dict[str, float]
    source: str
    spec: dict[str, Any] | None = None
    job_id: str | None = None


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


def _metrics_of(data: Any, where: str) -> dict[str, float]:
    metrics = data.get("metrics") if isinstance(data, dict) else None
    if not isinstance(metrics, dict):
        raise CheckError(f"{where} is not a robustlab result (no 'metrics' object; expected a result.json)")
    out = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CheckError(f"{where}: metric {name!r} is not a number ({value!r})")
        out[str(name)] = float(value)
    return out


def load_result_file(path: Path) -> Run:
    """A ``result.json`` (``robustlab run --out``), the directory holding one, or saved ``/results`` JSON."""
    if path.is_dir():
        path = path / "result.json"
    data = _read_structured(path, "result file")
    spec = data.get("spec") if isinstance(data, dict) else None
    return Run(_metrics_of(data, str(path)), str(path), spec if isinstance(spec, dict) else None)


def _looks_like_path(text: str) -> bool:
    return Path(text).exists() or "/" in text or os.sep in text or text.endswith((".json", ".yaml", ".yml"))


class Server:
    """The REST calls the gate makes (a thin layer over :class:`cli.client.RobustlabClient`)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float | None = None, poll: float = 0.5):
        self.url = url
        self.client = RobustlabClient(url)
        if api_key:
            self.client._http.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout, self.poll = timeout, poll

    def close(self) -> None:
        self.client.close()

    def finished_run(self, job_id: str, what: str) -> Run:
        """The metrics of a succeeded job; :class:`CheckError` if it is unknown, unfinished or failed."""
        try:
            job = self.client.job(job_id)
        except ApiError as exc:
            if exc.status_code == 404:
                raise CheckError(f"{what}: job {job_id!r} not found on {self.url} (and no file of that name)") from None
            raise CheckError(f"{what}: {exc}") from None
        if job["status"] != "succeeded":
            reason = f": {job['error']}" if job.get("error") else ""
            raise CheckError(f"{what}: job {job_id} ({job['name']}) is {job['status']}, not succeeded{reason}")
        try:
            results = self.client.results(job_id)
        except ApiError as exc:
            raise CheckError(f"{what}: {exc}") from None
        return Run(_metrics_of(results, f"job {job_id}"), f"job {job_id}", job.get("spec"), job_id)

    def newest_succeeded(self, name: str) -> dict:
        """The newest succeeded job whose spec name is ``name`` (``GET /jobs`` is newest first)."""
        page, offset = 500, 0
        while True:
            try:
                listing = self.client.jobs(status="succeeded", limit=page, offset=offset)
            except ApiError as exc:
                raise CheckError(f"--baseline-tag: {exc}") from None
            for job in listing["items"]:
                if job["name"] == name or (job.get("spec") or {}).get("name") == name:
                    return job
            offset += page
            if not listing["items"] or offset >= listing["total"]:
                raise CheckError(f"--baseline-tag: no succeeded job named {name!r} on {self.url}")

    def upload_checkpoint(self, path: Path, spec: dict[str, Any]) -> str:
        """Upload local weights (``POST /artifacts/checkpoints``); returns ``artifact:<id>`` for the spec."""
        weights = path / "model.safetensors" if path.is_dir() else path
        if not weights.is_file():
            raise CheckError(f"checkpoint not found: {weights}")
        try:
            with weights.open("rb") as f:
                artifact = self.client._request(
                    "POST",
                    "/api/v1/artifacts/checkpoints",
                    files={"file": (weights.name, f, "application/octet-stream")},
                    data={"spec": json.dumps({**spec, "checkpoint": None})},
                )
        except ApiError as exc:
            raise CheckError(f"uploading checkpoint {weights}: {exc}") from None
        ref = artifact.get("ref") or f"artifact:{artifact['id']}"
        err_console.print(f"uploaded checkpoint {weights} as {ref}", highlight=False)
        return ref

    def run(self, specs: Sequence[dict[str, Any]]) -> list[Run]:
        """Submit every spec first (workers run them in parallel), then wait for each; their metrics."""
        try:
            jobs = [self.client.submit(spec) for spec in specs]
        except ApiError as exc:
            raise CheckError(f"submitting the candidate: {exc}") from None
        runs = []
        for i, job in enumerate(jobs):
            err_console.print(f"candidate job {job['id']} ({i + 1}/{len(jobs)}): {job['status']}", highlight=False)
            try:
                job = self.client.wait(job["id"], poll_interval=self.poll, timeout=self.timeout)
            except (ApiError, TimeoutError) as exc:
                raise CheckError(f"waiting for candidate job {job['id']}: {exc}") from None
            runs.append(self.finished_run(job["id"], "candidate"))
        return runs


def load_baseline(refs: Sequence[str], tag: str | None, server: Server | None) -> Side | None:
    """Result files and job ids (``--baseline``), or the job ``--baseline-tag`` names."""
    if refs and tag:
        raise CheckError("give --baseline or --baseline-tag, not both")
    if tag:
        if server is None:
            raise CheckError("--baseline-tag needs a server (--server URL or ROBUSTLAB_SERVER_URL)")
        job = server.newest_succeeded(tag)
        run = server.finished_run(job["id"], "--baseline-tag")
        return Side(f"job {job['id']} (newest succeeded {tag!r})", [run])
    runs = []
    for ref in refs:
        if _looks_like_path(ref):
            if not Path(ref).exists():
                raise CheckError(f"baseline file not found: {ref}")
            runs.append(load_result_file(Path(ref)))
        elif server is None:
            raise CheckError(f"--baseline {ref!r}: no such file, and no server to look it up as a job id")
        else:
            runs.append(server.finished_run(ref, "--baseline"))
    if not runs:
        return None
    label = runs[0].source if len(runs) == 1 else f"{len(runs)} runs ({', '.join(r.source for r in runs)})"
    return Side(label, runs)


def load_candidate_spec(path: Path, checkpoint: Path | None, name: str | None):
    """The validated :class:`~core.spec.JobSpec` in ``path`` (``checkpoint`` / ``name`` applied)."""
    from core.spec import JobSpec

    data = _read_structured(path, "spec file")
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


def run_in_process(specs: Sequence, out: Path | None) -> list[Run]:
    """Train (or load) and evaluate each spec here with :func:`evaluation.runner.run_job`."""
    import torch

    from cli.display import JobProgress
    from core.config import get_settings
    from evaluation.runner import run_job

    threads = get_settings().torch_threads
    if threads > 0:
        torch.set_num_threads(threads)
    runs = []
    for i, spec in enumerate(specs):
        if spec.checkpoint is not None and not spec.checkpoint.startswith("artifact:"):
            if not Path(spec.checkpoint).exists():
                raise CheckError(f"checkpoint not found: {spec.checkpoint}")
        seed = f"train seed {spec.train.seed}" if spec.checkpoint is None else f"evaluation {i + 1}"
        where = None if out is None else (out if len(specs) == 1 else out / f"repeat-{i}")
        title = f"candidate {spec.name} ({i + 1}/{len(specs)}, {seed})"
        try:
            with JobProgress(err_console, title=title) as display:
                result = run_job(spec, out_dir=where, progress=display.update)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            raise CheckError(
                f"candidate run {i + 1}/{len(specs)} ({seed}) failed: {type(exc).__name__}: {exc}"
            ) from None
        runs.append(Run(dict(result.metrics), f"in-process ({seed})", spec.model_dump(mode="json")))
    return runs


# ---------------------------------------------------------------------------------------------------- compare
@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (0 for one value) and count of a metric over runs."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        n = len(values)
        mean = math.fsum(values) / n
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
        return cls(mean, std, n)

    @property
    def var_of_mean(self) -> float:
        return self.std**2 / self.n

    def __str__(self) -> str:
        return f"{self.mean:.4g}" if self.n == 1 else f"{self.mean:.4g} ± {self.std:.2g} (n={self.n})"


Verdict = Literal["pass", "regression", "error"]


@dataclass
class MetricCheck:
    metric: str
    direction: Direction | None
    baseline: Stat | None
    candidate: Stat | None
    rules: list[Rule]
    verdict: Verdict = "pass"
    reasons: list[str] = field(default_factory=list)
    limits: list[str] = field(default_factory=list)

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.candidate is None:
            return None
        return self.candidate.mean - self.baseline.mean

    def fail(self, verdict: Verdict, reason: str) -> None:
        if verdict == "error" or self.verdict == "pass":
            self.verdict = verdict
        self.reasons.append(reason)


@dataclass
class Report:
    checks: list[MetricCheck]
    candidate: Side
    baseline: Side | None
    k: float
    baseline_spread: str = "zero"
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def regressions(self) -> list[MetricCheck]:
        return [c for c in self.checks if c.verdict == "regression"]

    @property
    def errors(self) -> list[MetricCheck]:
        return [c for c in self.checks if c.verdict == "error"]

    @property
    def exit_code(self) -> int:
        return 2 if self.errors else (1 if self.regressions else 0)

    @property
    def headline(self) -> str:
        if self.errors:
            return f"error: {len(self.errors)} metric(s) could not be checked ({_names(self.errors)})"
        if self.regressions:
            return f"regression in {len(self.regressions)} metric(s): {_names(self.regressions)}"
        return f"pass: {len(self.checks)} metric(s) within the policy"


def _names(checks: Iterable[MetricCheck]) -> str:
    return ", ".join(c.metric for c in checks)


def _expand(rules: Sequence[Rule], names: set[str]) -> dict[str, dict[str, Rule]]:
    """metric → {kind → rule}; globs expand over the metrics either side has; an exact rule beats a glob."""
    per_metric: dict[str, dict[str, Rule]] = {}
    for rule in sorted(rules, key=lambda r: not r.is_pattern):  # globs first, exact names override them
        if rule.is_pattern:
            matched = sorted(n for n in names if fnmatch.fnmatchcase(n, rule.metric))
            if not matched:
                raise CheckError(f"{rule}: the pattern matches no metric of the baseline or the candidate")
        else:
            matched = [rule.metric]
        for metric in matched:
            per_metric.setdefault(metric, {})[rule.kind] = rule
    return per_metric


def _spec_drift(baseline: Side | None, candidate: Side) -> list[str]:
    """Warnings when the two sides were evaluated differently (seeds aside): their numbers may not compare."""
    if baseline is None:
        return []
    a = baseline.runs[0].spec
    b = candidate.runs[0].spec
    if not isinstance(a, dict) or not isinstance(b, dict):
        return []

    def strip_seeds(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip_seeds(v) for k, v in value.items() if k != "seed"}
        return value

    warnings = []
    for section in ("dataset", "evaluate", "task"):
        if section == "dataset":
            left, right = a.get(section), b.get(section)  # the dataset seed picks the test set: it counts
        else:
            left, right = strip_seeds(a.get(section)), strip_seeds(b.get(section))
        if left is not None and right is not None and left != right:
            warnings.append(f"baseline and candidate differ in '{section}': their metrics may not be comparable")
    return warnings


def compare(baseline: Side | None, candidate: Side, policy: Policy) -> Report:
    """Apply ``policy`` to every metric it names; see the module docstring for the noise allowance."""
    names = candidate.names() | (baseline.names() if baseline else set())
    k = policy.k
    checks = []
    for metric, rules in _expand(policy.rules, names).items():
        direction = metric_direction(metric, policy.directions)
        c_values = candidate.values(metric)
        b_values = baseline.values(metric) if baseline else None
        check = MetricCheck(
            metric,
            direction,
            Stat.of(b_values) if b_values else None,
            Stat.of(c_values) if c_values else None,
            list(rules.values()),
        )
        checks.append(check)
        if c_values is None:
            check.fail("error", f"{metric} is missing from the candidate ({candidate.label})")
        if "max_drop" in rules and b_values is None:
            where = baseline.label if baseline else "no baseline given"
            check.fail("error", f"{metric} is missing from the baseline ({where})")
        for side, values in (("candidate", c_values), ("baseline", b_values)):
            if values and not all(math.isfinite(v) for v in values):
                check.fail("error", f"{metric} is not finite in the {side}: {values}")
        if "max_drop" in rules and direction is None:
            check.fail(
                "error",
                f"{metric}: unknown direction (is higher or lower better?); name it in the policy file's 'direction'",
            )
        if check.verdict == "error" or check.candidate is None:
            continue
        c = check.candidate
        if "max_drop" in rules and check.baseline is not None and direction is not None:
            b = check.baseline
            rule = rules["max_drop"]
            tol = rule.value * abs(b.mean) if rule.relative else rule.value
            var_b = c.std**2 if b.n == 1 and policy.baseline_spread == "candidate" else b.var_of_mean
            noise = k * math.sqrt(c.var_of_mean + var_b)
            drop = (b.mean - c.mean) if direction == HIGHER else (c.mean - b.mean)
            word = "drop" if direction == HIGHER else "rise"
            check.limits.append(f"{word} ≤ {tol:.3g}" + (f" + {noise:.3g} noise" if noise > 0 else ""))
            if drop > tol + noise + EPS:
                allowance = f"{tol:.4g}" + (f" + {k:g}·σ/√N = {tol + noise:.4g}" if noise > 0 else "")
                moved = "fell" if direction == HIGHER else "rose"
                check.fail(
                    "regression",
                    f"{metric} {moved} by {drop:.4g} ({b.mean:.4g} → {c.mean:.4g}), more than the allowed {allowance}",
                )
        noise_c = k * math.sqrt(c.var_of_mean)
        if "min" in rules:
            floor = rules["min"].value
            check.limits.append(f"≥ {floor:.4g}" + (f" − {noise_c:.3g} noise" if noise_c > 0 else ""))
            if c.mean + noise_c < floor - EPS:
                check.fail("regression", f"{metric} = {c.mean:.4g} is below the floor {floor:.4g}")
        if "max" in rules:
            ceiling = rules["max"].value
            check.limits.append(f"≤ {ceiling:.4g}" + (f" + {noise_c:.3g} noise" if noise_c > 0 else ""))
            if c.mean - noise_c > ceiling + EPS:
                check.fail("regression", f"{metric} = {c.mean:.4g} is above the ceiling {ceiling:.4g}")
    checks.sort(key=lambda c: metric_sort_key(c.metric))
    return Report(checks, candidate, baseline, k, policy.baseline_spread, _spec_drift(baseline, candidate))


# ---------------------------------------------------------------------------------------------------- output
ARROW = {HIGHER: "↑", LOWER: "↓", None: "?"}
VERDICT_STYLE = {"pass": "[green]pass[/]", "regression": "[bold red]REGRESSION[/]", "error": "[bold yellow]ERROR[/]"}
VERDICT_MD = {"pass": "✅ pass", "regression": "❌ regression", "error": "⚠️ error"}


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:+.4g}"
    return str(value)


def _row(check: MetricCheck) -> list[str]:
    return [
        check.metric,
        ARROW[check.direction],
        _cell(check.baseline),
        _cell(check.candidate),
        _cell(check.delta),
        "; ".join(check.limits) or "—",
    ]


def report_table(report: Report) -> Table:
    against = report.baseline.label if report.baseline else "no baseline"
    table = Table(title=f"robustlab check: {report.candidate.label}  vs  {against}")
    for name, justify in (
        ("metric", "left"),
        ("better", "center"),
        ("baseline", "right"),
        ("candidate", "right"),
        ("Δ", "right"),
        ("allowed", "left"),
        ("verdict", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=name in ("metric", "better", "Δ", "verdict"))
    for check in report.checks:
        table.add_row(*_row(check), VERDICT_STYLE[check.verdict])
    return table


def print_report(report: Report) -> None:
    # CI logs are not terminals: rich would wrap at 80 columns, which folds the table; give it room there.
    out = console if console.is_terminal else Console(width=max(console.width, 140))
    out.print(report_table(report))
    for warning in report.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    for check in report.checks:
        for reason in check.reasons:
            style = "bold red" if check.verdict == "regression" else "bold yellow"
            out.print(f"[{style}]{check.verdict}:[/] {reason}", highlight=False)
    style = {0: "bold green", 1: "bold red", 2: "bold yellow"}[report.exit_code]
    out.print(f"[{style}]{report.headline}[/]  (k = {report.k:g}, {report.seconds:.1f} s)", highlight=False)


def junit_xml(report: Report) -> bytes:
    """JUnit XML: one ``testcase`` per metric; ``failure`` for a regression, ``error`` for a metric that could not
    be checked. Built with :mod:`xml.etree`, so names and messages are always escaped."""
    suite_name = f"robustlab check {report.candidate.name or 'candidate'}"
    counts = {
        "tests": str(len(report.checks)),
        "failures": str(len(report.regressions)),
        "errors": str(len(report.errors)),
        "skipped": "0",
        "time": f"{report.seconds:.3f}",
    }
    root = ET.Element("testsuites", {"name": "robustlab check", **counts})
    suite = ET.SubElement(
        root,
        "testsuite",
        {"name": suite_name, **counts, "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("candidate", report.candidate.label),
        ("baseline", report.baseline.label if report.baseline else ""),
        ("candidate_runs", str(len(report.candidate.runs))),
        ("k", f"{report.k:g}"),
        ("baseline_spread", report.baseline_spread),
    ):
        ET.SubElement(props, "property", name=name, value=value)
    classname = f"robustlab.check.{report.candidate.name or 'candidate'}"
    for check in report.checks:
        case = ET.SubElement(suite, "testcase", classname=classname, name=check.metric, time="0")
        details = (
            f"baseline: {_cell(check.baseline)}\ncandidate: {_cell(check.candidate)}\ndelta: {_cell(check.delta)}\n"
            f"better: {check.direction or 'unknown'}\nallowed: {'; '.join(check.limits) or '-'}\n"
            f"rules: {', '.join(str(r) for r in check.rules)}"
        )
        if check.verdict == "regression":
            node = ET.SubElement(case, "failure", message="; ".join(check.reasons), type="RobustnessRegression")
            node.text = details
        elif check.verdict == "error":
            node = ET.SubElement(case, "error", message="; ".join(check.reasons), type="CheckError")
            node.text = details
        else:
            ET.SubElement(case, "system-out").text = details
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_summary(report: Report) -> str:
    """A pull-request comment: verdict, what was compared, the per-metric table, the reasons."""
    icon = {0: "✅", 1: "❌", 2: "⚠️"}[report.exit_code]
    lines = [
        f"### {icon} robustlab check — {_md(report.headline)}",
        "",
        f"- **candidate:** {_md(report.candidate.label)}"
        + (f" — `{report.candidate.name}`" if report.candidate.name else ""),
        f"- **baseline:** {_md(report.baseline.label) if report.baseline else 'none (absolute bounds only)'}",
        f"- **noise allowance:** k = {report.k:g} standard errors over {len(report.candidate.runs)} candidate run(s)"
        + (f", {len(report.baseline.runs)} baseline run(s)" if report.baseline else "")
        + (" (one-run baseline assumed as noisy as a candidate run)" if report.baseline_spread == "candidate" else ""),
        "",
        "| metric | better | baseline | candidate | Δ | allowed | verdict |",
        "|---|:-:|--:|--:|--:|---|---|",
    ]
    for check in report.checks:
        cells = [_md(c) for c in _row(check)]
        cells[0] = f"`{cells[0]}`"
        lines.append("| " + " | ".join([*cells, VERDICT_MD[check.verdict]]) + " |")
    reasons = [(c.verdict, r) for c in report.checks for r in c.reasons]
    if reasons or report.warnings:
        lines.append("")
        lines += [f"- **{verdict}:** {_md(reason)}" for verdict, reason in reasons]
        lines += [f"- **warning:** {_md(w)}" for w in report.warnings]
    lines += ["", f"<sub>robustlab check · {report.seconds:.1f} s · exit {report.exit_code}</sub>", ""]
    return "\n".join(lines)


def _write(path: Path, payload: bytes | str, what: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(payload, bytes):
            path.write_bytes(payload)
        else:
            path.write_text(payload)
    except OSError as exc:
        raise CheckError(f"cannot write the {what} {path}: {exc}") from None


def _save_server_runs(runs: Sequence[Run], out: Path) -> None:
    """``out/result.json`` (``out/repeat-<i>/result.json`` for several runs) of candidate jobs run on a server."""
    for i, run in enumerate(runs):
        target = out if len(runs) == 1 else out / f"repeat-{i}"
        name = run.spec.get("name") if run.spec else None
        payload = {"name": name, "job_id": run.job_id, "spec": run.spec, "metrics": run.metrics}
        _write(target / "result.json", json.dumps(payload, indent=2, sort_keys=True), "result")


# ---------------------------------------------------------------------------------------------------- command
def check(
    spec_file: Annotated[
        Path | None, typer.Argument(help="candidate job spec: trained here, or on --server", show_default=False)
    ] = None,
    candidate: Annotated[
        list[Path] | None,
        typer.Option("--candidate", help="candidate result.json instead of a spec (repeatable: runs of several seeds)"),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="evaluate these weights (a `run --out` dir or .safetensors) with SPEC instead of training"),
    ] = None,
    baseline: Annotated[
        list[str] | None,
        typer.Option("--baseline", help="result.json (or its run directory), or a job id on the server; repeatable"),
    ] = None,
    baseline_tag: Annotated[
        str | None, typer.Option("--baseline-tag", help="the newest succeeded job on the server with this spec name")
    ] = None,
    max_drop: Annotated[
        list[str] | None,
        typer.Option("--max-drop", help="METRIC=TOL: largest allowed drop (rise, if lower is better); TOL or N%"),
    ] = None,
    min_: Annotated[list[str] | None, typer.Option("--min", help="METRIC=FLOOR: absolute lower bound")] = None,
    max_: Annotated[list[str] | None, typer.Option("--max", help="METRIC=CEILING: absolute upper bound")] = None,
    policy: Annotated[
        Path | None, typer.Option(help="policy file (JSON/YAML): max_drop, min, max, direction, k, baseline_spread")
    ] = None,
    repeats: Annotated[
        int, typer.Option(min=1, max=100, help="candidate runs with train/eval seeds + 0..N−1; compares the mean")
    ] = 1,
    k: Annotated[
        float | None, typer.Option("--k", min=0.0, help="noise allowance in standard errors (default 2)")
    ] = None,
    baseline_spread: Annotated[
        BaselineSpread | None,
        typer.Option(
            help="noise of a one-run baseline: zero (allowance k·s/√N) or candidate (k·s·√(1/N+1)); default zero"
        ),
    ] = None,
    server: Annotated[
        str | None, typer.Option(help="robustlab API: runs the candidate spec and resolves baseline job ids / tags")
    ] = None,
    local: Annotated[bool, typer.Option("--local", help="train the candidate here even with --server")] = False,
    candidate_name: Annotated[
        str | None, typer.Option(help="rename the candidate spec (keeps PR jobs apart from the baseline tag)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="write the candidate's result.json (per repeat) here")] = None,
    junit: Annotated[Path | None, typer.Option(help="write a JUnit XML report (one testcase per metric)")] = None,
    summary: Annotated[Path | None, typer.Option(help="write a Markdown summary (a pull-request comment)")] = None,
    timeout: Annotated[float | None, typer.Option(help="seconds to wait for server jobs")] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="ROBUSTLAB_API_KEY", help="Bearer key for a server with ROBUSTLAB_AUTH=keys")
    ] = None,
) -> None:
    """CI regression gate: compare a candidate with a baseline; exit 0 pass, 1 regression, 2 usage or error."""
    start = time.perf_counter()
    server_client: Server | None = None
    try:
        pol = build_policy(policy, max_drop or (), min_ or (), max_ or (), k, baseline_spread)
        if spec_file is not None and candidate:
            raise CheckError("give a candidate SPEC or --candidate result files, not both")
        if spec_file is None and not candidate:
            raise CheckError("no candidate: give a job SPEC (trained and evaluated) or --candidate result.json")
        if candidate and (repeats > 1 or checkpoint is not None):
            raise CheckError("--repeats and --checkpoint need a candidate SPEC, not --candidate result files")
        if any(r.kind == "max_drop" for r in pol.rules) and not baseline and not baseline_tag:
            raise CheckError("--max-drop compares with a baseline: give --baseline FILE|JOB_ID or --baseline-tag NAME")
        needs_server = baseline_tag is not None or any(not _looks_like_path(b) for b in baseline or ())
        runs_on_server = server is not None and spec_file is not None and not local
        if needs_server or runs_on_server:
            from core.config import get_settings

            server_client = Server(server or get_settings().server_url, api_key, timeout)
        base_side = load_baseline(baseline or (), baseline_tag, server_client)
        if spec_file is not None:
            spec = load_candidate_spec(spec_file, checkpoint, candidate_name)
            specs = repeat_specs(spec, repeats)
            if spec.checkpoint is None:
                seeds = "train seed" + ("s " if repeats > 1 else " ") + ", ".join(str(s.train.seed) for s in specs)
            else:
                eval_seeds = ", ".join(str(s.evaluate.pgd.seed if s.evaluate.pgd else i) for i, s in enumerate(specs))
                seeds = "eval seed" + ("s " if repeats > 1 else " ") + eval_seeds
            what = f"{spec_file}" + (f" + checkpoint {spec.checkpoint}" if spec.checkpoint else "")
            if runs_on_server:
                assert server_client is not None
                if spec.checkpoint and not spec.checkpoint.startswith("artifact:") and Path(spec.checkpoint).exists():
                    ref = server_client.upload_checkpoint(Path(spec.checkpoint), spec.model_dump(mode="json"))
                    specs = [s.model_copy(update={"checkpoint": ref}) for s in specs]
                runs = server_client.run([s.model_dump(mode="json") for s in specs])
                where = f"on {server_client.url}"
                if out is not None:
                    _save_server_runs(runs, out)
            else:
                runs = run_in_process(specs, out)
                where = "in-process"
            label = f"{what} ({where}, {seeds})"
            cand_side = Side(label, runs)
        else:
            files = [load_result_file(p) for p in candidate or ()]
            label = files[0].source if len(files) == 1 else f"{len(files)} runs ({', '.join(f.source for f in files)})"
            cand_side = Side(label, files)
        report = compare(base_side, cand_side, pol)
    except CheckError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err_console.print("[bold red]error:[/] interrupted", highlight=False)
        raise typer.Exit(130) from None
    except Exception as exc:  # a crash must not read as "regression" (exit 1) in CI
        err_console.print_exception(max_frames=8)
        err_console.print(f"[bold red]error:[/] the gate failed: {type(exc).__name__}: {exc}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        if server_client is not None:
            server_client.close()
    report.seconds = time.perf_counter() - start
    print_report(report)
    try:
        if junit is not None:
            _write(junit, junit_xml(report), "JUnit report")
        if summary is not None:
            _write(summary, markdown_summary(report), "summary")
    except CheckError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    raise typer.Exit(report.exit_code)


__all__ = [
    "DIRECTION_BY_PREFIX",
    "CheckError",
    "Policy",
    "Report",
    "Rule",
    "Side",
    "build_policy",
    "check",
    "compare",
    "junit_xml",
    "markdown_summary",
    "metric_direction",
    "parse_rule",
]
