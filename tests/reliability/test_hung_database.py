"""A database that accepts connections and never answers (issue 18, item 3).

The API (a real ``uvicorn`` process) is pointed at a local TCP listener that accepts every connection and never
sends a byte, as a hung PostgreSQL server would, and gets 60 concurrent ``GET /api/v1/jobs``. Every one must be a
``503`` with ``Retry-After`` (never a ``500`` from a pool timeout) within the README's 10 s bound (plus a margin
for a loaded 2-core machine): connecting times out after 10 s, waiting for a pooled connection too, and once a
connect has failed the waiting requests fail at once (``db.session.ConnectGate``).
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from reliability_harness import Services
from service_helpers import record_timing

from db.session import PG_CONNECT_TIMEOUT_S

pytestmark = [pytest.mark.services, pytest.mark.e2e, pytest.mark.timeout(240)]

CONCURRENT = 60
MARGIN_S = 4.0  # process start of the request, scheduling on a shared 2-core machine


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts TCP connections and never answers (the sockets are held open until the end)."""
    server = socket.create_server(("127.0.0.1", 0), backlog=256)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


def _timed_get(url: str) -> tuple[int, float, str]:
    start = time.monotonic()
    try:
        r = httpx.get(url, timeout=120)
    except httpx.HTTPError as exc:
        return -1, time.monotonic() - start, repr(exc)
    return r.status_code, time.monotonic() - start, r.text if r.status_code != 503 else r.headers.get("retry-after", "")


def test_hung_database_gives_503_within_the_bound(silent_listener: int, reliability_broker, tmp_path) -> None:
    url = f"postgresql+psycopg://robustlab@127.0.0.1:{silent_listener}/hung"
    stack = Services.create(tmp_path / "hung", url, reliability_broker.url, ROBUSTLAB_RECOVERY_INTERVAL="3600")
    try:
        stack.start_api()
        deadline = time.monotonic() + 60
        while True:  # up, without touching the database (/healthz would wait on it)
            try:
                if httpx.get(f"{stack.base_url}/openapi.json", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, stack.tail()
            time.sleep(0.2)
        with ThreadPoolExecutor(CONCURRENT) as pool:
            results = list(pool.map(_timed_get, [f"{stack.base_url}/api/v1/jobs"] * CONCURRENT))
    finally:
        stack.stop()
    codes = [code for code, _, _ in results]
    seconds = sorted(s for _, s, _ in results)
    record_timing(
        fault=f"hung database, {CONCURRENT} concurrent GET /api/v1/jobs",
        codes={str(c): codes.count(c) for c in sorted(set(codes))},
        p50_s=round(statistics.median(seconds), 2),
        max_s=round(seconds[-1], 2),
    )
    assert codes == [503] * CONCURRENT, [r for r in results if r[0] != 503][:3]
    assert all(extra for _, _, extra in results), "every 503 carries Retry-After"
    assert seconds[-1] < PG_CONNECT_TIMEOUT_S + MARGIN_S, seconds
