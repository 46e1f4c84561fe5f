"""The Celery application, configured from :class:`core.config.Settings`.

The worker process uses the module-level ``app`` (``celery -A worker.celery_app worker -Q cpu``), which includes
:mod:`worker.tasks`. The API builds a *client* with :func:`create_celery_app` and ``include_tasks=False`` and
enqueues by task name (``send_task("robustlab.run_job", …)``) without importing task code.

There is no result backend: the database is the source of truth for job state and results. Late acks,
reject-on-worker-lost and a prefetch of one make a lost worker's job come back to the queue; exactly-once execution
comes from the lease claimed in the database (:func:`db.lifecycle.claim_job`), not from the broker.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from core.config import Settings, get_settings

TASK_RUN_JOB = "robustlab.run_job"
QUEUES = ("cpu", "gpu")


def create_celery_app(settings: Settings | None = None, include_tasks: bool = True) -> Celery:
    settings = settings or get_settings()
    app = Celery("robustlab", broker=settings.broker_url, include=["worker.tasks"] if include_tasks else [])
    app.conf.update(
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES],
        task_default_queue="cpu",
        task_default_exchange="cpu",
        task_default_routing_key="cpu",
        task_routes={TASK_RUN_JOB: {"queue": "cpu"}},
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=settings.broker_timeout,
        worker_send_task_events=False,
        timezone="UTC",
        enable_utc=True,
    )
    if settings.broker_url.startswith(("sqla+sqlite", "sqlalchemy+sqlite")):
        # kombu passes the transport options to create_engine(): wait up to 30 s for SQLite's write lock (the API
        # publishes while the worker polls) instead of pysqlite's default 5 s.
        app.conf.broker_transport_options = {"connect_args": {"timeout": 30}}
    return app


app = create_celery_app()
