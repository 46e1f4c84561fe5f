"""``robustlab up``, ``robustlab worker`` and ``robustlab db …``: run the service and keep its database.

::

    robustlab up                    # migrate, start a Celery worker and serve the API (embedded default: SQLite)
    robustlab worker -Q gpu,cpu     # a worker on another machine (the same database, broker and artifacts)
    robustlab worker --gpus 0,1     # one worker per GPU, each pinned (CUDA_VISIBLE_DEVICES), on the gpu queue
    robustlab db upgrade            # apply the Alembic migrations
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.table import Table

from cli.common import console, err_console, fail
from core.config import Settings, get_settings

db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)


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
        raise fail(f"database migration failed on {settings.database_url}: {type(exc).__name__}: {exc}") from None
    with exit_on_signals():
        worker = start_group(_worker_command(None, settings.worker_concurrency))
        try:
            console.print(_settings_table(settings))
            console.print(f"robustlab API on [bold]http://{host}:{port}[/]  (docs: http://{host}:{port}/docs)")
            _warn_if_open(settings, host)
            uvicorn.run("api.main:app", host=host, port=port, log_level="info")
        finally:
            stop_group(worker)


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
        raise fail(str(exc)) from None
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
        raise fail(f"migration failed on {url}: {type(exc).__name__}: {exc}") from None
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


@db_app.command("current")
def db_current() -> None:
    """Print the Alembic revision the database is at (none: not migrated yet)."""
    from db.migrate import current

    url = get_settings().database_url
    try:
        revision = current(url)
    except Exception as exc:
        raise fail(f"cannot read the database at {url}: {type(exc).__name__}: {exc}") from None
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
        raise fail(f"seeding {url} failed: {type(exc).__name__}: {exc}") from None
    console.print(f"added {len(rows)} jobs and {5 * len(rows)} results to {url}", highlight=False)
