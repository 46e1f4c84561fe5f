"""Celery tasks. Only the worker imports this module (the API enqueues by name).

``robustlab.run_job(job_id)`` runs :func:`worker.executor.execute_job`; the database decides whether the delivery
is run or dropped. A worker waits for its database (and schema) before it starts consuming.
"""

from __future__ import annotations

import logging
import os
import time

from celery.signals import worker_init, worker_ready
from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError
from tenacity import before_sleep_log, retry, retry_if_exception_type, stop_after_delay, wait_exponential

from core.config import get_settings
from db.models import Job
from db.session import dispose_engines, session_scope
from worker.celery_app import TASK_RUN_JOB, app
from worker.executor import execute_job, worker_name

log = logging.getLogger(__name__)


def wait_for_db(max_seconds: float | None = None) -> None:
    """Block until the database answers and has the ``jobs`` table (``robustlab db upgrade`` ran)."""
    settings = get_settings()
    limit = settings.db_wait_seconds if max_seconds is None else max_seconds

    @retry(
        stop=stop_after_delay(limit),
        wait=wait_exponential(multiplier=0.25, max=5),
        retry=retry_if_exception_type(Exception),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )
    def _check() -> None:
        with session_scope(settings.database_url) as session:
            session.execute(select(Job.id).limit(1))

    _check()
    dispose_engines()  # no connection is inherited by forked pool processes


def preload_runner() -> None:
    """Import the runner (torch, torchattacks, scikit-learn: seconds) once in the worker's main process, so the
    first job does not pay for it; prefork children inherit the modules. Importing torch does not start its thread
    pools or CUDA, so forking afterwards is safe."""
    global _preload_seconds
    start = time.perf_counter()
    import torch._dynamo  # noqa: F401  (torch.optim imports it on the first optimizer: ~3-5 s)

    import evaluation.runner  # noqa: F401

    _preload_seconds = time.perf_counter() - start


_preload_seconds: float | None = None


@worker_init.connect
def _on_worker_init(**_kwargs) -> None:
    try:
        wait_for_db()
    except Exception as exc:  # Celery logs and ignores exceptions from signal handlers: exit instead of
        # consuming jobs that could not be claimed
        raise SystemExit(f"robustlab worker: database not ready after waiting: {type(exc).__name__}: {exc}") from exc
    preload_runner()


@worker_ready.connect
def _on_worker_ready(**_kwargs) -> None:  # logging is configured by now (it is not yet at worker_init)
    if _preload_seconds is not None:
        log.info("job runner preloaded in %.1f s; database %s", _preload_seconds, _redacted_db_url())


def _redacted_db_url() -> str:
    from sqlalchemy.engine import make_url

    return make_url(get_settings().database_url).render_as_string(hide_password=True)


@app.task(name=TASK_RUN_JOB, bind=True, ignore_result=True)
def run_job(self, job_id: str) -> str:
    """Run the job ``job_id`` if this worker can claim it. If the database is unreachable the message is sent
    again later (an acknowledged message would otherwise be lost while the job waits in the database)."""
    worker = f"{self.request.hostname}/{os.getpid()}" if self.request.hostname else worker_name()
    try:
        return execute_job(job_id, worker=worker)
    except (OperationalError, InterfaceError) as exc:
        log.warning("job %s: database unreachable (%s); retrying in 10 s", job_id, exc)
        raise self.retry(exc=exc, countdown=10, max_retries=60) from exc
