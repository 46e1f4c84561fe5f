"""``robustlab reevaluate``: run the current evaluation on the weights stored jobs kept, with no retraining.

::

    robustlab reevaluate 3f2c…                 # one job (or several ids)
    robustlab reevaluate --stale               # every succeeded job evaluated under an older protocol
    robustlab reevaluate --stale --dataset spirals --wait

Each job gets a new job (``POST /api/v1/jobs/{id}/reevaluate``) that loads its weights and links back to it; a job
already re-evaluated under the current protocol (queued, running or done) is not queued again. A job that kept no
weights (or is not succeeded) cannot be re-evaluated: with ids that is an error (exit 2), with ``--stale`` it is
listed as skipped. With ``--wait`` the new jobs are followed to the end (exit 1 if one failed).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from cli.client import ApiError, RobustlabClient
from cli.common import ServerOption, fail
from core.config import get_settings

console = Console(soft_wrap=True)  # one line per job, whatever the terminal width
PAGE = 500


def stale_jobs(client: RobustlabClient, dataset: str | None, family: str | None) -> list[dict]:
    """Every succeeded job the server calls stale (``GET /api/v1/jobs?stale=true``), all pages."""
    found: list[dict] = []
    while True:
        page = client.jobs(limit=PAGE, offset=len(found), stale=True, dataset=dataset, family=family)
        found += page["items"]
        if not page["items"] or len(found) >= page["total"]:
            return found


def reevaluate(
    job_ids: Annotated[list[str] | None, typer.Argument(help="ids of succeeded jobs to re-evaluate")] = None,
    stale: Annotated[bool, typer.Option("--stale", help="every job evaluated under an older protocol")] = False,
    dataset: Annotated[str | None, typer.Option(help="--stale: only this dataset")] = None,
    family: Annotated[str | None, typer.Option(help="--stale: only this model family")] = None,
    force: Annotated[bool, typer.Option(help="queue again even if a current re-evaluation exists")] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="follow the new jobs until they finish")] = False,
    poll: Annotated[float, typer.Option(help="--wait: seconds between status polls")] = 1.0,
    timeout: Annotated[float | None, typer.Option(help="--wait: give up after this many seconds")] = None,
    server: ServerOption = None,
) -> None:
    """Re-evaluate stored jobs with the current evaluation protocol (their weights, no retraining)."""
    if bool(job_ids) == stale:
        raise fail("give job ids or --stale (one of the two)")
    if not stale and (dataset or family):
        raise fail("--dataset / --family apply to --stale only")
    queued: list[dict] = []
    skipped = reused = 0
    with RobustlabClient(server or get_settings().server_url) as client:
        try:
            sources = stale_jobs(client, dataset, family) if stale else [{"id": i, "name": None} for i in job_ids or []]
        except ApiError as exc:
            raise fail(str(exc)) from None
        if stale:
            console.print(f"{len(sources)} stale job(s) (evaluated under an older protocol)", highlight=False)
        for source in sources:
            label = source["id"] + (f" ({source['name']})" if source.get("name") else "")
            try:
                job, was_reused = client.reevaluate(source["id"], force=force)
            except ApiError as exc:
                if not stale or exc.status_code != 409:
                    raise fail(str(exc)) from None
                console.print(f"{label}: skipped, {exc.detail}", highlight=False)
                skipped += 1
                continue
            reused += was_reused
            state = f"already re-evaluated as {job['id']} ({job['status']})" if was_reused else f"queued {job['id']}"
            console.print(f"{label}: {state}", highlight=False)
            queued.append(job)
        console.print(
            f"{len(queued) - reused} queued, {reused} already re-evaluated, {skipped} not re-evaluable", highlight=False
        )
        if not wait:
            return
        failed = []
        for job in queued:
            try:
                done = client.wait(job["id"], poll_interval=poll, timeout=timeout)
            except (ApiError, TimeoutError) as exc:
                raise fail(str(exc)) from None
            console.print(f"{done['id']}: {done['status']}", highlight=False)
            if done["status"] != "succeeded":
                failed.append(done)
    if failed:
        raise fail(f"{len(failed)} re-evaluation(s) did not succeed: {', '.join(j['id'] for j in failed)}", code=1)
