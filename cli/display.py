"""Rich rendering shared by the commands: a progress display fed with the runner's progress events, tables."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.metrics import sort_key


class JobProgress:
    """``with JobProgress(console) as p: p.update({"phase": "train", "epoch": 3, "epochs": 100, "loss": 0.5})``.

    Shows a bar over epochs while training, then the evaluation step; ``status`` (queued/running) is shown
    before the first event arrives."""

    def __init__(self, console: Console, title: str = "job") -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.title = title
        self._task = None

    def __enter__(self) -> JobProgress:
        self.progress.start()
        self._task = self.progress.add_task(f"{self.title}: waiting", total=None, detail="")
        return self

    def __exit__(self, *_exc) -> None:
        self.progress.stop()

    def update(self, event: Mapping[str, Any] | None, status: str | None = None) -> None:
        event = event or {}
        phase = event.get("phase")
        detail = ""
        total = completed = None
        if phase == "train":
            total, completed = event.get("epochs"), event.get("epoch")
            loss = event.get("loss")
            detail = f"loss {loss:.4g}" if isinstance(loss, (int, float)) else (f"loss {loss}" if loss else "")
            if event.get("resumed_from") is not None:
                detail += f" · resumed from epoch {event['resumed_from']}"
        elif phase == "evaluate":
            detail = str(event.get("step", ""))
        terminal = status in ("succeeded", "failed", "cancelled")
        label = status if terminal or not phase else phase
        self.progress.update(self._task, description=f"{self.title}: {label}", detail=detail)
        if total is not None:
            self.progress.update(self._task, total=total, completed=completed or 0)
        elif phase in ("evaluate", "done") or status == "succeeded":
            task = self.progress.tasks[0]
            self.progress.update(self._task, total=task.total or 1, completed=task.total or 1)


def metrics_table(metrics: Mapping[str, float], title: str = "metrics") -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in sorted(metrics, key=sort_key):
        table.add_row(name, f"{metrics[name]:.4g}")
    return table


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def leaderboard_table(board: Mapping[str, Any]) -> Table:
    """Rank, job, spec summary, the ranking metric (and clean accuracy when ranking by something else)."""
    metric = board["metric"]
    with_clean = metric != "clean_acc"
    table = Table(title=f"leaderboard: {metric} ({board.get('order', 'desc')})")
    table.caption = f"value = {metric}" + ("; clean = clean_acc" if with_clean else "")
    if board.get("protocol_version"):
        table.caption += f"; protocol {board['protocol_version']} (stale: evaluated under an older one)"
    columns = ["#", "job", "name", "family", "dataset", "width", "depth", "θ", "h", "value"]
    columns += ["clean"] * with_clean + ["created", "protocol"]
    for column in columns:
        text = column in ("job", "name", "family", "dataset", "created", "protocol")
        table.add_column(column, justify="left" if text else "right", overflow="fold", min_width=len(column))
    entries: Iterable[Mapping[str, Any]] = board.get("entries", [])
    for e in entries:
        row = [str(e["rank"]), e["job_id"][:8], e["name"], e["family"], e["dataset"]]
        row += [_fmt(e.get(k)) for k in ("width", "depth", "theta", "h", "value")]
        row += [_fmt(e.get("clean_acc"))] * with_clean + [str(e.get("created_at", ""))[:10]]
        row += [("stale" if e.get("stale") else "current") + ("" if e.get("weights_kept", True) else ", no weights")]
        table.add_row(*row)
    return table
