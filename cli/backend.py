"""Where the CLI runs jobs: in this process, or on a robustlab server. ``robustlab submit``, ``robustlab sweep`` and
``robustlab check`` (``--repeats``, ``--make-baseline``) all run their jobs through one :class:`Backend`::

    backend = InProcess(jobs=2) if server is None else OnServer(RobustlabClient(server), poll=1.0, timeout=600)
    specs = backend.with_checkpoints(specs)          # job specs as JSON objects; a local checkpoint made usable
    for run in backend.run(specs, progress=console):  # each job's end, in the order of specs
        print(run.name, run.status, run.metrics.get("clean_acc"), run.error)

A spec is the JSON object a user writes (the server validates it, so a client and a server of different versions
agree on what the user wrote, not on one side's defaults); in-process it is validated here.

* :class:`InProcess` trains and evaluates with :func:`evaluation.runner.run_job`, one job after the other (with a
  progress bar on ``progress``) or in ``jobs`` worker processes; a job's exception is its ``failed`` run.
* :class:`OnServer` submits every job first (the workers run them in parallel), then follows each until it ends
  and reads its results — every REST call through :class:`cli.client.RobustlabClient`. A job whose end could not be
  learned (the server stopped answering, ``timeout`` passed) is an ``unknown`` run; a submission the server refuses
  is a :class:`BackendError`.

Results do not depend on the backend or on ``jobs``: every job seeds itself.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from cli.client import ApiError, RobustlabClient
from cli.common import err_console
from cli.display import JobProgress
from core.spec import JobSpec

Spec = Mapping[str, Any]


class BackendError(Exception):
    """The jobs could not be started: the server refused or could not be reached (``name``: the job it refused), a
    checkpoint is missing."""

    def __init__(self, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


@dataclass
class JobRun:
    """How one job ended: ``status`` is the job's (``succeeded``, ``failed``, ``cancelled``) or ``unknown`` (its end
    could not be learned: ``error`` says why); its metrics and info (``info["outcomes"]``: per-sample outcomes)."""

    name: str
    spec: dict[str, Any]
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    job_id: str | None = None  # on a server
    out_dir: str | None = None  # in-process: where it wrote result.json, the weights and the plots

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


OnSubmitted = Callable[[int, Spec, dict], None]
OnDone = Callable[[int, JobRun], None]


class Backend(Protocol):
    where: str  # "in-process", "on http://…"

    def with_checkpoints(self, specs: Sequence[Spec]) -> list[Spec]: ...

    def run(
        self,
        specs: Sequence[Spec],
        out_dirs: Sequence[str | Path | None] | None = None,
        progress: Console | None = None,
        on_done: OnDone | None = None,
    ) -> list[JobRun]: ...


def _local_checkpoint(spec: Spec) -> Path | None:
    ref = spec.get("checkpoint")
    return None if not isinstance(ref, str) or ref.startswith(("artifact:", "job:")) else Path(ref)


# ---------------------------------------------------------------------------------------------------- in-process
def _run_one(
    spec_json: str, out_dir: str | None, torch_threads: int, progress: Callable | None = None, resume: bool = False
) -> tuple[str, dict[str, float], dict[str, Any], str | None]:
    """Run one job in this process (also the body of a pool worker): ``(status, metrics, info, error)``. With
    ``resume`` (and an ``out_dir``) training checkpoints go to ``out_dir/checkpoints`` and training resumes from
    them (:mod:`evaluation.checkpoints`)."""
    import torch

    from evaluation.runner import run_job

    if torch_threads > 0:
        torch.set_num_threads(torch_threads)
    try:
        checkpoints = Path(out_dir) / "checkpoints" if resume and out_dir is not None else None
        spec = JobSpec.model_validate_json(spec_json)
        result = run_job(spec, out_dir=out_dir, progress=progress, checkpoint_dir=checkpoints)
    except Exception as exc:
        return "failed", {}, {}, f"{type(exc).__name__}: {exc}"
    return "succeeded", dict(result.metrics), dict(result.info), None


class InProcess:
    """Jobs trained and evaluated here; ``jobs`` > 1: that many worker processes (spawned), each with
    ``torch_threads`` threads (default: settings.torch_threads)."""

    where = "in-process"

    def __init__(self, jobs: int = 1, torch_threads: int | None = None, resume: bool = False) -> None:
        if torch_threads is None:
            from core.config import get_settings

            torch_threads = get_settings().torch_threads
        self.jobs, self.torch_threads, self.resume = jobs, torch_threads, resume

    def with_checkpoints(self, specs: Sequence[Spec]) -> list[Spec]:
        """The specs as given; :class:`BackendError` for a local checkpoint that does not exist."""
        for spec in specs:
            path = _local_checkpoint(spec)
            if path is not None and not path.exists():
                raise BackendError(f"checkpoint not found: {path}")
        return list(specs)

    def run(
        self,
        specs: Sequence[Spec],
        out_dirs: Sequence[str | Path | None] | None = None,
        progress: Console | None = None,
        on_done: OnDone | None = None,
    ) -> list[JobRun]:
        """Every job, in order (one after the other, a progress bar each on ``progress``) or in worker processes.
        ``on_done(i, run)`` as each ends; an exception it raises stops the rest (one after the other)."""
        dirs = [None if d is None else str(d) for d in (out_dirs or [None] * len(specs))]
        runs: list[JobRun | None] = [None] * len(specs)

        texts = [json.dumps(dict(spec)) for spec in specs]
        names = [str(spec.get("name", "job")) for spec in specs]

        def done(i: int, status: str, metrics: dict, info: dict, error: str | None) -> None:
            runs[i] = JobRun(names[i], dict(specs[i]), status, metrics, info, error, None, dirs[i])
            if on_done is not None:
                on_done(i, runs[i])

        if self.jobs <= 1 or len(specs) <= 1:
            for i in range(len(specs)):
                title = f"{names[i]} ({i + 1}/{len(specs)})" if len(specs) > 1 else names[i]
                display = JobProgress(progress, title=title) if progress is not None else None
                with display if display is not None else contextlib.nullcontext():
                    update = display.update if display is not None else None
                    done(i, *_run_one(texts[i], dirs[i], self.torch_threads, update, self.resume))
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            context = multiprocessing.get_context("spawn")  # no fork of a process that already runs torch threads
            with ProcessPoolExecutor(max_workers=min(self.jobs, len(specs)), mp_context=context) as pool:
                futures = {
                    pool.submit(_run_one, texts[i], dirs[i], self.torch_threads, None, self.resume): i
                    for i in range(len(specs))
                }
                for future in as_completed(futures):
                    i = futures[future]
                    try:
                        done(i, *future.result())
                    except Exception as exc:  # a worker process died
                        done(i, "failed", {}, {}, f"{type(exc).__name__}: {exc}")
        return [run for run in runs if run is not None]


# ---------------------------------------------------------------------------------------------------- server
class OnServer:
    """Jobs run by the workers of the server behind ``client``: polled every ``poll`` seconds, given up on after
    ``timeout`` seconds in all (``None``: never)."""

    def __init__(
        self,
        client: RobustlabClient,
        poll: float = 0.5,
        timeout: float | None = None,
        on_submitted: OnSubmitted | None = None,
    ) -> None:
        self.client, self.poll, self.timeout, self.on_submitted = client, poll, timeout, on_submitted
        self.where = f"on {client.base_url}"

    def with_checkpoints(self, specs: Sequence[Spec]) -> list[Spec]:
        """Local weights uploaded once each (``POST /artifacts/checkpoints``) and the specs pointed at them
        (``artifact:<id>``); a checkpoint already on the server is left as it is."""
        refs: dict[Path, str] = {}
        out = []
        for spec in specs:
            path = _local_checkpoint(spec)
            if path is not None:
                if path not in refs:
                    refs[path] = self._upload(path, spec)
                spec = {**spec, "checkpoint": refs[path]}
            out.append(spec)
        return out

    def _upload(self, path: Path, spec: Spec) -> str:
        weights = path / "model.safetensors" if path.is_dir() else path
        if not weights.is_file():
            raise BackendError(f"checkpoint not found: {weights}")
        try:
            artifact = self.client.upload_checkpoint(weights, {**spec, "checkpoint": None})
        except ApiError as exc:
            raise BackendError(f"uploading checkpoint {weights}: {exc}") from None
        ref = artifact.get("ref") or f"artifact:{artifact['id']}"
        err_console.print(f"uploaded checkpoint {weights} as {ref}", highlight=False)
        return ref

    def submit(self, specs: Sequence[Spec]) -> list[dict]:
        """Queue every job (``on_submitted(i, spec, job)`` after each); :class:`BackendError` names the spec the
        server refused."""
        jobs = []
        for i, spec in enumerate(specs):
            try:
                job = self.client.submit(spec)
            except ApiError as exc:
                raise BackendError(str(exc), str(spec.get("name", "job"))) from exc
            if self.on_submitted is not None:
                self.on_submitted(i, spec, job)
            jobs.append(job)
        return jobs

    def wait(
        self, jobs: Sequence[dict], progress: Console | None = None, on_done: OnDone | None = None
    ) -> list[JobRun]:
        """Follow each submitted job until it ends (a progress bar each on ``progress``) and read its results."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        runs = []
        for i, job in enumerate(jobs):
            left = None if deadline is None else max(1.0, deadline - time.monotonic())
            run = JobRun(job["name"], job.get("spec") or {}, "unknown", job_id=job["id"])
            try:
                job = self._follow(job, progress, left)
                run.status, run.error, run.spec = job["status"], job.get("error"), job.get("spec") or run.spec
                if run.ok:
                    results = self.client.results(job["id"])
                    run.metrics, run.info = dict(results["metrics"]), dict(results.get("info") or {})
            except (ApiError, TimeoutError) as exc:
                run.status, run.error = "unknown", str(exc)
            if on_done is not None:
                on_done(i, run)
            runs.append(run)
        return runs

    def _follow(self, job: dict, progress: Console | None, timeout: float | None) -> dict:
        if progress is None:
            return self.client.wait(job["id"], None, self.poll, timeout)
        with JobProgress(progress, title=job["name"]) as display:

            def update(state: dict) -> None:
                display.update(state.get("progress"), state["status"])

            return self.client.wait(job["id"], update, self.poll, timeout)

    def run(
        self,
        specs: Sequence[Spec],
        out_dirs: Sequence[str | Path | None] | None = None,
        progress: Console | None = None,
        on_done: OnDone | None = None,
    ) -> list[JobRun]:
        """:meth:`submit` every job, then :meth:`wait` for each (``out_dirs``: the server keeps the files)."""
        return self.wait(self.submit(specs), progress, on_done)


__all__ = ["Backend", "BackendError", "InProcess", "JobRun", "OnServer"]
