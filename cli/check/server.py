"""The REST calls the gate makes, and resolving ``--baseline`` / ``--baseline-tag`` to runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from cli.check.files import CheckError
from cli.check.inputs import Run, Side, load_runs, looks_like_path, run_of
from cli.client import ApiError, RobustlabClient

err_console = Console(stderr=True)


class Server:
    """The REST calls the gate makes (a thin layer over :class:`cli.client.RobustlabClient`)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float | None = None, poll: float = 0.5):
        self.url = url
        self.client = RobustlabClient(url, api_key=api_key)
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
        run = run_of(results, f"job {job_id}", job_id)
        run.spec = run.spec or job.get("spec")
        return run

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
            artifact = self.client.upload_checkpoint(weights, {**spec, "checkpoint": None})
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
    runs: list[Run] = []
    labels: list[str] = []
    for ref in refs:
        if looks_like_path(ref):
            if not Path(ref).exists():
                raise CheckError(f"baseline file not found: {ref}")
            found, label = load_runs(Path(ref))
            runs += found
            labels.append(label)
        elif server is None:
            raise CheckError(f"--baseline {ref!r}: no such file, and no server to look it up as a job id")
        else:
            runs.append(server.finished_run(ref, "--baseline"))
            labels.append(runs[-1].source)
    if not runs:
        return None
    label = labels[0] if len(labels) == 1 else f"{len(runs)} runs ({', '.join(labels)})"
    return Side(label, runs)
