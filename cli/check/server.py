"""Resolving ``--baseline`` / ``--baseline-tag`` to runs: files, or finished jobs on a server (looked up through
:class:`cli.client.RobustlabClient`; the candidate's jobs run through :mod:`cli.backend`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cli.check.files import CheckError
from cli.check.inputs import Run, Side, load_runs, looks_like_path, run_of
from cli.client import ApiError, RobustlabClient


class Server:
    """The server's finished jobs, as the gate reads them."""

    def __init__(self, client: RobustlabClient) -> None:
        self.client = client
        self.url = client.base_url

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
