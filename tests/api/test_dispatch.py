"""The API's recovery sweep (:meth:`api.dispatch.Dispatcher.recover`) against a real database and real brokers:
one that refuses connections, then kombu's SQLAlchemy transport on SQLite."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from service_helpers import free_port, tiny_spec

from api.dispatch import Dispatcher
from core.config import Settings
from core.spec import JobSpec
from db import jobs
from db.session import session_scope


def queued_messages(broker_db: Path) -> list[str]:
    with sqlite3.connect(broker_db) as conn:
        return [row[0] for row in conn.execute("SELECT payload FROM kombu_message")]


def test_recover_re_sends_queued_jobs_once_the_broker_answers(sqlite_url: str, tmp_path: Path) -> None:
    with session_scope(sqlite_url) as s:
        ids = [jobs.create_job(s, JobSpec.model_validate(tiny_spec(f"sweep-{i}"))).id for i in range(2)]

    down = Settings(database_url=sqlite_url, broker_url=f"redis://127.0.0.1:{free_port()}/0", broker_timeout=0.5)
    start = time.monotonic()
    assert Dispatcher(down).recover(include_queued=True) == {"requeued": 0, "failed": 0, "sent": 0}
    assert time.monotonic() - start < 15  # gives up quickly: the sweep must not hang on a dead broker

    broker_db = tmp_path / "broker.db"
    up = Settings(database_url=sqlite_url, broker_url=f"sqla+sqlite:///{broker_db}", redispatch_after=60)
    dispatcher = Dispatcher(up)
    # the jobs the dead broker refused are due at once (not after the 60 s back-off) …
    assert dispatcher.recover(include_queued=False)["sent"] == 2
    messages = queued_messages(broker_db)
    assert len(messages) == 2 and all(any(i in m for m in messages) for i in ids)
    # … and then back off: the next sweeps send nothing
    assert dispatcher.recover(include_queued=False)["sent"] == 0
    assert len(queued_messages(broker_db)) == 2
