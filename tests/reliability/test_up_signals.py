"""Every signal that stops ``robustlab up`` stops everything it started (issue 18, item 4).

``robustlab up --workers 2`` runs for real on PostgreSQL and Redis: the API (uvicorn, in its own process) and a
Celery worker with two prefork children. Once the API is healthy and the worker is ready, every process descended
from ``up`` is listed from ``/proc``; then ``up`` gets the signal, and within the grace period none of them may be
left (before the fix SIGTERM left the worker and its children running, reparented to PID 1). The settings table
must show the concurrency that runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from service_helpers import REPO, free_port, service_env

from db.migrate import upgrade

pytestmark = [pytest.mark.services, pytest.mark.e2e, pytest.mark.timeout(180)]


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process tree from /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stop_signal_leaves_no_process(make_pg_database, reliability_broker, tmp_path, sig) -> None:
    database_url = make_pg_database()
    upgrade(database_url)
    reliability_broker.flush()
    port = free_port()
    env = service_env(database_url, reliability_broker.url, tmp_path / "artifacts")
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "up", "--port", str(port), "--workers", "2"],
        cwd=REPO,
        env=env | {"COLUMNS": "200"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the test signals `up` alone, as `kill PID` does
    )
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while True:
            text = (tmp_path / "up.log").read_text(errors="replace")
            try:
                healthy = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
            except httpx.HTTPError:
                healthy = False
            started = descendants(up.pid)
            if healthy and " ready." in text and len(started) >= 3:  # the worker, its 2 children (+ helpers)
                break
            assert up.poll() is None and time.monotonic() < deadline, text
            time.sleep(0.3)
        table_row = next(line for line in text.splitlines() if "worker_concurrency" in line)
        assert table_row.split("worker_concurrency")[1].strip(" │|").split()[0] == "2", table_row

        os.kill(up.pid, sig)
        up.wait(timeout=60)
        deadline = time.monotonic() + 20
        while (left := {pid for pid in started if alive(pid)}) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"still running after {sig.name} to `up`: {left}"
    finally:
        for pid in started | {up.pid}:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        up.wait(timeout=30)
        log.close()
