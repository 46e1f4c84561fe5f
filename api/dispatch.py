"""Enqueueing jobs, and re-dispatching the ones the broker lost.

The API talks to the broker through a Celery *client* (no task code imported) and sends ``robustlab.run_job`` by
name, with the job id as Celery task id, on the job's queue (``cpu`` or ``gpu``)::

    dispatcher = Dispatcher(settings)
    dispatcher.enqueue(job.id, spec.queue())      # False if the broker is down: the job stays queued in the DB

The database is the source of truth, so a message may be sent twice at no risk (the worker's atomic claim drops
duplicates). :meth:`Dispatcher.recover` re-sends what the broker or a worker lost. It runs in the API process
(:class:`RecoveryLoop`, every ``recovery_interval`` seconds; every API process runs one, and the database makes
each re-send happen once) — there is no sweeper in the worker:

* a ``running`` job whose lease expired (its worker was killed, or lost its machine) is put back to ``queued`` and
  re-sent at once, or failed after ``max_attempts`` lost workers;
* a ``queued`` job that nobody has claimed ``redispatch_after`` seconds after its submission is re-sent (the broker
  may have lost the message: Redis keeps nothing on disk), then again with a back-off that doubles with the job's
  age up to ``redispatch_max_interval`` (:func:`db.recovery.claim_redispatch`) — unless its message is still waiting
  in a Redis queue (:meth:`Dispatcher.waiting_in_broker`): only what the broker can have lost is sent again, so a
  job that merely waits in a long queue gets no duplicate at all;
* at API start-up every ``queued`` job is re-sent.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING

from core.config import Settings
from db import recovery
from db.session import session_scope
from worker.celery_app import TASK_RUN_JOB, create_celery_app

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)
QUEUES = ("cpu", "gpu")
PRIORITY_SUFFIXES = ("\x06\x163", "\x06\x166", "\x06\x169")  # kombu's Redis priority queues (steps 3, 6, 9)
MAX_INSPECTED = 50_000  # messages read per sweep at most; beyond, queued jobs are re-sent on their back-off alone


class Dispatcher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._celery: Celery | None = None
        self._lock = threading.Lock()

    @property
    def celery(self) -> Celery:
        if self._celery is None:
            with self._lock:
                if self._celery is None:
                    self._celery = create_celery_app(self.settings, include_tasks=False)
        return self._celery

    def enqueue(self, job_id: str, queue: str) -> bool:
        """Send the job to the broker. Never raises: returns ``False`` (and logs) if the broker is unreachable."""
        try:
            self.celery.send_task(
                TASK_RUN_JOB,
                args=[job_id],
                task_id=job_id,
                queue=queue,
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
            )
        except Exception as exc:
            log.warning("job %s stays queued in the database: enqueue failed: %s: %s", job_id, type(exc).__name__, exc)
            return False
        return True

    def broker_error(self) -> str | None:
        """``None`` if the broker answers within ``settings.broker_timeout`` seconds, else the error text."""
        from kombu.exceptions import ChannelError

        try:
            with self.celery.connection_for_write(connect_timeout=self.settings.broker_timeout) as conn:
                conn.ensure_connection(max_retries=1, interval_start=0, timeout=self.settings.broker_timeout)
                try:  # a round trip to the store behind the broker (Redis LLEN, SQL query)
                    conn.default_channel.queue_declare(queue="cpu", passive=True)
                except ChannelError:  # the queue does not exist yet, but the broker answered
                    pass
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    def waiting_in_broker(self, queues: tuple[str, ...] = QUEUES) -> set[str] | None:
        """The job ids of the messages waiting in the broker's queues (not yet delivered to a worker), or ``None``
        when that cannot be known cheaply: not a Redis broker, more than :data:`MAX_INSPECTED` messages, or the
        broker unreachable. A delivered message (Redis' ``unacked``) is not counted: its worker may be gone."""
        if not self.settings.broker_url.startswith(("redis://", "rediss://")):
            return None
        import redis

        try:
            client = redis.Redis.from_url(self.settings.broker_url, socket_timeout=self.settings.broker_timeout)
            keys = [f"{queue}{sep}" for queue in queues for sep in ("", *PRIORITY_SUFFIXES)]
            if sum(client.llen(key) for key in keys) > MAX_INSPECTED:
                return None
            found: set[str] = set()
            for key in keys:
                for raw in client.lrange(key, 0, -1):
                    try:
                        found.add(json.loads(raw)["headers"]["id"])
                    except (ValueError, KeyError, TypeError):
                        continue
            return found
        except redis.RedisError as exc:
            log.warning("cannot inspect the broker's queues: %s", exc)
            return None

    def recover(self, include_queued: bool) -> dict[str, int]:
        """Put jobs whose worker was lost back in the queue (or fail them after ``max_attempts``), then re-send the
        queued jobs that are due (see the module docstring); with ``include_queued`` every queued job."""
        settings = self.settings
        with session_scope(settings.database_url) as session:
            requeued, gave_up = recovery.recover_orphans(session, settings.max_attempts)
            to_send = recovery.claim_redispatch(
                session, settings.redispatch_after, settings.redispatch_max_interval, everything=include_queued
            )
        for job in gave_up:
            log.error("job %s failed: its worker was lost %d times", job.id, job.attempts)
        orphans = {job.id for job in requeued}
        waiting = self.waiting_in_broker() if to_send else None
        if waiting:  # their messages are still in the queue: not lost, nothing to re-send
            kept = [job for job in to_send if job.id in waiting and job.id not in orphans]
            to_send = [job for job in to_send if job.id not in waiting or job.id in orphans]
            if kept:
                log.info("recovery: %d queued jobs still waiting in the broker, not re-sent", len(kept))
        sent = 0
        for job in to_send:
            queue = "gpu" if (job.spec or {}).get("device") == "cuda" else "cpu"  # as JobSpec.queue()
            if not self.enqueue(job.id, queue):  # broker down: the next sweep tries the rest again
                with session_scope(settings.database_url) as session:
                    recovery.release_redispatch(session, [j.id for j in to_send[sent:]])
                break
            sent += 1
        if requeued or gave_up or sent:
            log.info("recovery: %d requeued, %d failed, %d sent", len(requeued), len(gave_up), sent)
        return {"requeued": len(requeued), "failed": len(gave_up), "sent": sent}


class RecoveryLoop(threading.Thread):
    """At start-up re-send all queued jobs, then every ``recovery_interval`` seconds recover lost workers' jobs and
    re-send queued jobs that are due."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        super().__init__(name="robustlab-recovery", daemon=True)
        self.dispatcher = dispatcher
        self._stop_event = threading.Event()

    def run(self) -> None:
        include_queued = True
        while True:
            try:
                self.dispatcher.recover(include_queued=include_queued)
                include_queued = False
            except Exception:
                log.warning("recovery sweep failed", exc_info=True)
            if self._stop_event.wait(self.dispatcher.settings.recovery_interval):
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
