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
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from cli.check import check as check_command
from cli.client import ApiError, RobustlabClient, format_validation_errors
from cli.display import JobProgress, leaderboard_table, metrics_table
from cli.reevaluate import reevaluate as reevaluate_command
from cli.sweep import sweep as sweep_command
from core.config import Settings, get_settings

app = typer.Typer(
    help="robustlab: robustness benchmarking of explicit and implicit residual networks.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.command("check")(check_command)  # the CI regression gate (cli/check/)
app.command("sweep")(sweep_command)  # grids of jobs and one comparison table (cli/sweep.py)
app.command("reevaluate")(reevaluate_command)  # stored weights, current evaluation (cli/reevaluate.py)
keys_app = typer.Typer(
    help="API keys for ROBUSTLAB_AUTH=keys: create (printed once), list, revoke.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")

console = Console()
err_console = Console(stderr=True)

ServerOption = Annotated[str | None, typer.Option("--server", help="API address (default: settings.server_url)")]


def _fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _read_spec_file(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; exit 2 with a clear message if it is missing or not JSON."""
    if not path.exists():
        _fail(f"spec file not found: {path}")
    if not path.is_file():
        _fail(f"not a file: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        _fail(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read {path}: {exc}")
    if not isinstance(data, dict):
        _fail(f"{path} must hold a JSON object (a job spec), not {type(data).__name__}")
    return data


def _worker_command(queues: str | None, concurrency: int, pool: str | None = None) -> list[str]:
    if queues is None:
        import torch

        queues = "cpu,gpu" if torch.cuda.is_available() else "cpu"
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "-Q",
        queues,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        "INFO",
    ]
    if pool:
        command += ["--pool", pool]
    return command


def _settings_table(settings: Settings) -> Table:
    table = Table(title="settings (ROBUSTLAB_*)", show_header=False)
    for name in ("database_url", "broker_url", "artifacts_dir", "lease_seconds", "worker_concurrency", "auth"):
        table.add_row(name, str(getattr(settings, name)))
    return table


# ---------------------------------------------------------------------------------------------------- service
@app.command()
def up(
    host: Annotated[str, typer.Option(help="address the API listens on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    workers: Annotated[
        int | None, typer.Option(help="jobs the worker runs at once (Celery concurrency; default: settings)")
    ] = None,
) -> None:
    """Migrate the database, start a Celery worker and serve the API (Ctrl-C, SIGTERM or SIGHUP stops both)."""
    import uvicorn

    from cli.processes import exit_on_signals, start_group, stop_group
    from db.migrate import upgrade

    settings = get_settings()
    if workers is not None:
        settings = settings.model_copy(update={"worker_concurrency": workers})  # so the table shows what runs
    try:
        upgrade(settings.database_url)
    except Exception as exc:
        _fail(f"database migration failed on {settings.database_url}: {type(exc).__name__}: {exc}")
    with exit_on_signals():
        worker = start_group(_worker_command(None, settings.worker_concurrency))
        try:
            console.print(_settings_table(settings))
            console.print(f"robustlab API on [bold]http://{host}:{port}[/]  (docs: http://{host}:{port}/docs)")
            _warn_if_open(settings, host)
            uvicorn.run("api.main:app", host=host, port=port, log_level="info")
        finally:
            stop_group(worker)


@app.command()
def worker(
    queues: Annotated[str | None, typer.Option("-Q", "--queues", help="default: cpu, plus gpu if CUDA")] = None,
    concurrency: Annotated[int | None, typer.Option(help="default: settings.worker_concurrency")] = None,
    pool: Annotated[str | None, typer.Option(help="Celery pool: prefork (default), solo, threads")] = None,
    gpus: Annotated[
        str | None,
        typer.Option(
            "--gpus",
            help="one worker per GPU, e.g. 0,1 (or all): each pinned with CUDA_VISIBLE_DEVICES, on the gpu queue "
            "(-Q to change), one job at a time (--concurrency to change)",
        ),
    ] = None,
) -> None:
    """Run a Celery worker (replaces this process); with --gpus, one per GPU, supervised by this process."""
    if gpus is None:
        command = _worker_command(queues, concurrency or get_settings().worker_concurrency, pool)
        os.execv(command[0], command)
    import torch

    from cli.gpu_workers import GpuListError, gpu_workers, parse_gpus, start_workers, supervise
    from cli.processes import exit_on_signals

    try:
        ids = parse_gpus(gpus, torch.cuda.device_count())
    except GpuListError as exc:
        _fail(str(exc))
    workers = gpu_workers(ids, lambda q, c: _worker_command(q, c, pool), queues or "gpu", concurrency or 1)
    for w in workers:
        console.print(f"GPU {w.gpu}: worker {w.node} on queue(s) {queues or 'gpu'}", highlight=False)
    with exit_on_signals():
        code = supervise(start_workers(workers))
    raise typer.Exit(code)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="target revision")] = "head") -> None:
    """Apply the Alembic migrations (``alembic upgrade head``) to settings.database_url."""
    from db.migrate import upgrade

    url = get_settings().database_url
    try:
        upgrade(url, revision)
    except Exception as exc:
        _fail(f"migration failed on {url}: {type(exc).__name__}: {exc}")
    console.print(f"database at revision {revision}: {url}")


def _warn_if_open(settings: Settings, host: str) -> None:
    """``ROBUSTLAB_AUTH=open``: say plainly that anyone who reaches the port can submit, cancel and upload."""
    if settings.auth != "open":
        console.print(f"API keys required to write (ROBUSTLAB_AUTH=keys; public reads: {settings.public_read})")
        return
    loopback = host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
    where = "on this machine" if loopback else f"that can reach {host} — NOT only this machine"
    err_console.print(
        f"[bold yellow]WARNING: the API is open (ROBUSTLAB_AUTH=open): anyone {where} can submit, cancel and "
        "retry jobs and upload files, without a key.[/] For a shared server set ROBUSTLAB_AUTH=keys and create "
        "keys with `robustlab keys create --name NAME --scope write`.",
        highlight=False,
    )


# ---------------------------------------------------------------------------------------------------- db, keys
@db_app.command("current")
def db_current() -> None:
    """Print the Alembic revision the database is at (none: not migrated yet)."""
    from db.migrate import current

    url = get_settings().database_url
    try:
        revision = current(url)
    except Exception as exc:
        _fail(f"cannot read the database at {url}: {type(exc).__name__}: {exc}")
    console.print(revision or "none (run `robustlab db upgrade`)", highlight=False)


@db_app.command("seed")
def db_seed(
    jobs: Annotated[int, typer.Option(help="succeeded jobs to add (5 result rows each)")] = 1000,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
) -> None:
    """Add synthetic succeeded jobs and results (for trying the leaderboard and measuring it; not for real data)."""
    from db.seed import seed_leaderboard

    url = get_settings().database_url
    try:
        rows = seed_leaderboard(url, jobs, seed=seed)
    except Exception as exc:
        _fail(f"seeding {url} failed: {type(exc).__name__}: {exc}")
    console.print(f"added {len(rows)} jobs and {5 * len(rows)} results to {url}", highlight=False)


def _keys_session():
    from db.session import session_scope

    return session_scope(get_settings().database_url)


def _keys_error(exc: Exception) -> NoReturn:
    from sqlalchemy.exc import ProgrammingError

    hint = (
        " (run `robustlab db upgrade` first)"
        if isinstance(exc, ProgrammingError) or "no such table" in str(exc)
        else ""
    )
    _fail(f"{type(exc).__name__}: {exc}{hint}")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="a unique name for the key (who or what uses it)")],
    scope: Annotated[str, typer.Option(help="read | write (submit, cancel, retry, upload) | admin")] = "write",
) -> None:
    """Create an API key and print it (to stdout, alone on its line): it is shown only this once, and only its
    hash is stored."""
    from api.security import create_api_key

    try:
        with _keys_session() as session:
            key, token = create_api_key(session, name, scope)
    except ValueError as exc:
        _fail(str(exc))
    except Exception as exc:
        _keys_error(exc)
    err_console.print(
        f"created API key {key.name!r} with scope {key.scope!r}. Store it now: it is not shown again. "
        f"Clients send it as 'Authorization: Bearer <key>' (the CLI reads ROBUSTLAB_API_KEY).",
        highlight=False,
    )
    print(token)


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"


@keys_app.command("list")
def keys_list() -> None:
    """List the API keys (names, scopes, dates; never the keys)."""
    from api.security import KEY_PREFIX, list_api_keys

    try:
        with _keys_session() as session:
            keys = list_api_keys(session)
    except Exception as exc:
        _keys_error(exc)
    if not keys:
        console.print("no API keys (create one with `robustlab keys create --name NAME`)")
        return
    table = Table(title="API keys")
    for column in ("name", "scope", "key", "created", "last used", "status"):
        table.add_column(column)
    for key in keys:
        status = f"revoked {_when(key.revoked_at)}" if key.revoked_at else "active"
        prefix = f"{KEY_PREFIX}{key.prefix}_…"
        table.add_row(key.name, key.scope, prefix, _when(key.created_at), _when(key.last_used_at), status)
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="the key's name")]) -> None:
    """Revoke an API key: requests with it are refused (401) from now on."""
    from api.security import revoke_api_key

    try:
        with _keys_session() as session:
            key = revoke_api_key(session, name)
    except Exception as exc:
        _keys_error(exc)
    if key is None:
        _fail(f"no API key named {name!r}")
    console.print(f"revoked API key {name!r}", highlight=False)


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
    spec = _read_spec_file(spec_file)
    with RobustlabClient(server or get_settings().server_url) as client:
        try:
            job = client.submit(spec)
        except ApiError as exc:
            _fail(str(exc))
        console.print(f"submitted job [bold]{job['id']}[/] ({job['name']}): {job['status']}", highlight=False)
        if not wait:
            console.print(job["id"], highlight=False)
            return
        try:
            with JobProgress(console, title=job["name"]) as display:
                job = client.wait(job["id"], lambda j: display.update(j.get("progress"), j["status"]), poll, timeout)
        except KeyboardInterrupt:
            _fail(f"stopped following; job {job['id']} goes on on the server", code=130)
        except (ApiError, TimeoutError) as exc:
            _fail(str(exc))
        if job["status"] != "succeeded":
            err_console.print(
                f"[bold red]job {job['id']} {job['status']}:[/] {job.get('error') or ''}", highlight=False
            )
            raise typer.Exit(1)
        try:
            results = client.results(job["id"])
        except ApiError as exc:
            _fail(str(exc))
    console.print(metrics_table(results["metrics"], title=job["name"]))


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

    data = _read_spec_file(spec_file)
    if "sweep" in data:  # a sweep preset: run its base point (`robustlab sweep` runs the grid)
        axes = ", ".join(data["sweep"]) if isinstance(data["sweep"], dict) else data["sweep"]
        data = {k: v for k, v in data.items() if k != "sweep"}
        console.print(f"note: {spec_file} sweeps {axes}; running its base point only (the grid: robustlab sweep)")
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        _fail(f"invalid job spec {spec_file}:\n{format_validation_errors(exc.errors())}")
    out = out or Path("runs") / spec.name
    settings = get_settings()
    import torch

    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    from evaluation.runner import run_job

    try:
        with JobProgress(console, title=spec.name) as display:
            checkpoints = out / "checkpoints" if resume else None
            result = run_job(spec, out_dir=out, progress=display.update, checkpoint_dir=checkpoints)
    except KeyboardInterrupt:
        _fail("interrupted", code=130)
    except Exception as exc:
        err_console.print(f"[bold red]job failed:[/] {type(exc).__name__}: {exc}", highlight=False)
        raise typer.Exit(1) from None
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
        _fail(f"--format: table, json, csv or robustbench, not {format!r}")
    params = dict(dataset=dataset, family=family, task=task, metric=metric, order=order, limit=limit, cursor=cursor)
    params["current"] = "true" if current else None
    with RobustlabClient(server or get_settings().server_url) as client:
        try:
            if format in ("csv", "robustbench"):
                text, next_cursor = client.leaderboard_export(format, **params)
            else:
                board = client.leaderboard(**params)
        except ApiError as exc:
            _fail(str(exc))
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
