"""``robustlab``: run the service, submit jobs, run a job in-process, show the leaderboard.

Exit codes: 0 success, 1 the job failed (or was cancelled), 2 bad input or an unreachable / erroring server.

::

    robustlab up                              # API + worker on the embedded default (SQLite, no Redis)
    robustlab submit examples/spirals.json    # through the API, with a progress bar
    robustlab run examples/spirals.json --out runs/spirals   # in-process, no server
    robustlab leaderboard --dataset spirals --metric pgd_linf_acc@0.1
    robustlab reevaluate --stale                 # after an upgrade: the current evaluation on stored weights
    robustlab keys create --name ci --scope write   # a Bearer key for ROBUSTLAB_AUTH=keys, printed once
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from cli.backend import BackendError, InProcess, OnServer
from cli.check import check as check_command
from cli.client import ApiError, RobustlabClient, format_validation_errors
from cli.common import ServerOption, console, err_console, fail, read_spec_file
from cli.display import leaderboard_table, metrics_table
from cli.keys import keys_app
from cli.reevaluate import reevaluate as reevaluate_command
from cli.service import db_app, up, worker
from cli.sweep import sweep as sweep_command
from core.config import get_settings

app = typer.Typer(
    help="robustlab: robustness benchmarking of explicit and implicit residual networks.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(db_app, name="db")  # migrations, seed data (cli/service.py)
app.command("check")(check_command)  # the CI regression gate (cli/check/)
app.command("sweep")(sweep_command)  # grids of jobs and one comparison table (cli/sweep.py)
app.command("reevaluate")(reevaluate_command)  # stored weights, current evaluation (cli/reevaluate.py)
app.add_typer(keys_app, name="keys")  # API keys (cli/keys.py)
app.command()(up)  # API + worker (cli/service.py)
app.command()(worker)


# ---------------------------------------------------------------------------------------------------- jobs
@app.command()
def submit(
    spec_file: Annotated[Path, typer.Argument(help="job spec (JSON)")],
    server: ServerOption = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="follow the job until it finishes")] = True,
    poll: Annotated[float, typer.Option(help="seconds between status polls")] = 0.5,
    timeout: Annotated[float | None, typer.Option(help="give up waiting after this many seconds")] = None,
) -> None:
    """Submit a job to the server; with --wait show its progress and metrics. Exit 1 if the job fails."""
    spec = read_spec_file(spec_file)

    def submitted(_i: int, _spec: dict, job: dict) -> None:
        console.print(f"submitted job [bold]{job['id']}[/] ({job['name']}): {job['status']}", highlight=False)

    with RobustlabClient(server or get_settings().server_url) as client:
        backend = OnServer(client, poll, timeout, on_submitted=submitted)
        try:
            [job] = backend.submit([spec])
        except BackendError as exc:
            raise fail(str(exc)) from None
        if not wait:
            console.print(job["id"], highlight=False)
            return
        try:
            [run] = backend.wait([job], progress=console)
        except KeyboardInterrupt:
            raise fail(f"stopped following; job {job['id']} goes on on the server", code=130) from None
    if run.status == "unknown":
        raise fail(run.error or "the job's end is unknown")
    if not run.ok:
        err_console.print(f"[bold red]job {run.job_id} {run.status}:[/] {run.error or ''}", highlight=False)
        raise typer.Exit(1)
    console.print(metrics_table(run.metrics, title=run.name))


@app.command()
def run(
    spec_file: Annotated[Path, typer.Argument(help="job spec (JSON)")],
    out: Annotated[Path | None, typer.Option("--out", help="output directory (default: runs/<name>)")] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="keep training checkpoints in OUT/checkpoints (train.checkpoint_every) and go on from the newest "
            "one of this spec: an interrupted run continues where it stopped",
        ),
    ] = False,
) -> None:
    """Run a job in this process, without a server; writes result.json, model.safetensors and spec.json."""
    from core.spec import JobSpec

    data = read_spec_file(spec_file)
    if "sweep" in data:  # a sweep preset: run its base point (`robustlab sweep` runs the grid)
        axes = ", ".join(data["sweep"]) if isinstance(data["sweep"], dict) else data["sweep"]
        data = {k: v for k, v in data.items() if k != "sweep"}
        console.print(f"note: {spec_file} sweeps {axes}; running its base point only (the grid: robustlab sweep)")
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        raise fail(f"invalid job spec {spec_file}:\n{format_validation_errors(exc.errors())}") from None
    out = out or Path("runs") / spec.name
    try:
        [result] = InProcess(resume=resume).run([data], [out], progress=console)
    except KeyboardInterrupt:
        raise fail("interrupted", code=130) from None
    if not result.ok:
        err_console.print(f"[bold red]job failed:[/] {result.error}", highlight=False)
        raise typer.Exit(1)
    console.print(metrics_table(result.metrics, title=spec.name))
    console.print(f"wrote {out}/result.json, {out}/model.safetensors, {out}/spec.json", highlight=False)


@app.command()
def leaderboard(
    dataset: Annotated[str | None, typer.Option(help="only this dataset")] = None,
    family: Annotated[str | None, typer.Option(help="only this model family")] = None,
    task: Annotated[str | None, typer.Option(help="only this task")] = None,
    metric: Annotated[str, typer.Option(help="rank by this metric, e.g. pgd_linf_acc@0.1")] = "clean_acc",
    order: Annotated[str, typer.Option(help="desc: highest first; asc: lowest first")] = "desc",
    limit: Annotated[int, typer.Option(help="rows")] = 20,
    cursor: Annotated[str | None, typer.Option(help="the next page: the cursor the previous page printed")] = None,
    current: Annotated[
        bool, typer.Option("--current", help="only entries evaluated under the current protocol (no stale ones)")
    ] = False,
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="table (for people), json (the API's Leaderboard object), csv, or robustbench (RobustBench "
            "model_info objects; autoattack_acc only where the standard suite ran)",
        ),
    ] = "table",
    server: ServerOption = None,
) -> None:
    """Show the best succeeded jobs by a metric, or export them (--format json|csv|robustbench) to stdout."""
    if format not in ("table", "json", "csv", "robustbench"):
        raise fail(f"--format: table, json, csv or robustbench, not {format!r}")
    params = dict(dataset=dataset, family=family, task=task, metric=metric, order=order, limit=limit, cursor=cursor)
    params["current"] = "true" if current else None
    with RobustlabClient(server or get_settings().server_url) as client:
        try:
            if format in ("csv", "robustbench"):
                text, next_cursor = client.leaderboard_export(format, **params)
            else:
                board = client.leaderboard(**params)
        except ApiError as exc:
            raise fail(str(exc)) from None
    if format in ("csv", "robustbench"):
        sys.stdout.write(text if format == "csv" else json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n")
        if next_cursor:
            err_console.print(f"next page: --cursor {next_cursor}", highlight=False, soft_wrap=True)
        return
    if format == "json":
        sys.stdout.write(json.dumps(board, indent=2, ensure_ascii=False) + "\n")
        return
    if not board["entries"]:
        console.print(f"no succeeded job has metric {metric!r} (with these filters)", highlight=False)
        return
    console.print(leaderboard_table(board))
    if board.get("next_cursor"):
        err_console.print(f"next page: --cursor {board['next_cursor']}", highlight=False, soft_wrap=True)


if __name__ == "__main__":
    app()
