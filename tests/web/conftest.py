"""Fixtures for the web pages and the leaderboard exports (the data and the server: :mod:`web_helpers`).

* ``web_site``: a migrated SQLite database populated by :func:`web_helpers.populate` (with one real tiny job run by
  the worker's code), and a real ``uvicorn api.main:app`` on a free port serving it (session scope; its log is
  attached to the report of a failing test).
* ``make_web_client(url, artifacts, **settings)``: the app in-process (FastAPI TestClient).
* ``screenshots``: ``test-output/screenshots/`` (gitignored).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import in_process_apps
from web_helpers import SCREENSHOTS, Site, populate, start_uvicorn, stop

from core.config import Settings
from db.migrate import upgrade


@pytest.fixture(scope="session")
def web_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("web-site")
    url = f"sqlite:///{workdir / 'robustlab.db'}"
    artifacts = workdir / "artifacts"
    upgrade(url)
    t0 = time.perf_counter()
    data = populate(url, artifacts, real_job=True)
    t1 = time.perf_counter()
    proc, base_url, log = start_uvicorn(url, artifacts, workdir)
    site = Site(base_url, url, artifacts, data, log, proc)
    site.timings = {**data.timings, "populate_s": t1 - t0, "server_start_s": time.perf_counter() - t1}
    yield site
    stop(proc)


@pytest.fixture
def make_web_client() -> Iterator[Callable[..., TestClient]]:
    with in_process_apps() as start:

        def make(url: str, artifacts: Path, **overrides: Any) -> TestClient:
            values: dict[str, Any] = {"database_url": url, "broker_url": "memory://", "artifacts_dir": artifacts,
                                      "auth": "open", "rate_limit": 0}  # fmt: skip
            return start(Settings(**(values | overrides)))

        yield make


@pytest.fixture
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed:
        site = getattr(item, "funcargs", {}).get("web_site")
        if isinstance(site, Site):
            report.sections.append(("web server log", site.tail()))
    return report
