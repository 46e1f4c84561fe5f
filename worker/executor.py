"""Run one job from the database: claim → heartbeat → :func:`evaluation.runner.run_job` → store.

Celery-free, so it can be called (and tested) without a broker::

    outcome = execute_job(job_id, worker="host:1234")   # "succeeded" | "failed" | "dropped" | "cancelled" | "lost"

* **claim**: :func:`db.lifecycle.claim_job` takes the job atomically; a job that is finished, cancelled or held by
  another worker with a live lease is *dropped* (a duplicate delivery).
* **heartbeat**: a daemon thread renews the lease every ``stop_check_seconds`` (at most every ``lease_seconds / 3``);
  when renewal fails (the job was cancelled, or the lease expired and another worker took over) it raises a stop
  flag, which the runner checks before every forward pass of the model (``should_stop``: training, each attack,
  certification, plug-and-play stop at the next batch, :class:`evaluation.runner.JobStopped`) and the progress
  callback turns into :class:`JobAborted`. A cancelled job frees its worker within about ``stop_check_seconds``
  plus one batch.
* **progress**: written to the database at most every ``settings.progress_interval`` seconds (and at each change
  of phase); training reports carry ``seconds_per_epoch`` and ``eta_seconds`` timed from the epochs so far.
* **checkpoints**: training checkpoints go to ``artifacts_dir/<job id>/checkpoints`` (every
  ``train.checkpoint_every`` epochs, default a tenth of them); a job run again after its worker was lost resumes
  from the newest (progress ``resumed_from``), and a finished job keeps its final one only
  (:mod:`evaluation.checkpoints`).
* **out of memory**: the runner's :class:`evaluation.device.OutOfMemory` names the batch size that failed; like
  every error of the job itself it fails the job at once (stored, not retried), and the GPU's cache is emptied.
* **artifacts**: ``artifact:<id>`` references in the spec (uploaded checkpoint or dataset) are resolved to files
  under ``settings.artifacts_dir`` (:func:`db.artifacts.resolve_spec`) before the runner sees the spec.
* **store**: metrics and info in one transaction (:func:`db.lifecycle.complete_job`), or the error text
  ``"<ExceptionType>: <message>"`` (:func:`db.lifecycle.fail_job`). Artifacts go to ``artifacts_dir/<job id>/``; the
  weights kept there (``info["weights"]``) make the job re-evaluable, and the runner's ``info["provenance"]`` sets
  the job's code identity and protocol version.
* **database down**: the claim and the writes that finish a job are retried (exponential back-off, up to
  ``settings.db_retry_seconds``) while the lease is kept by the heartbeat, which itself keeps trying; an unreachable
  database never marks a job failed. If it stays down longer, :class:`sqlalchemy.exc.OperationalError` propagates
  (the Celery task retries) and the job, still ``running``, is re-run by the recovery sweep once its lease expires.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from core.config import Settings, get_settings
from core.spec import JobSpec
from db import jobs, lifecycle
from db.artifacts import JOB_WEIGHTS_FILE, resolve_spec
from db.session import session_scope

log = logging.getLogger(__name__)

#: training checkpoints of a job, under ``artifacts_dir/<job id>/`` (:mod:`evaluation.checkpoints`)
CHECKPOINTS_DIR = "checkpoints"
#: what SQLAlchemy raises when the database cannot be reached (refused, terminated, …): worth retrying
DB_UNAVAILABLE = (OperationalError, InterfaceError)
T = TypeVar("T")


class JobAborted(Exception):
    """The job stopped being this worker's to run (cancelled, or its lease was taken over)."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat(threading.Thread):
    """Renews a job's lease in the background; sets :attr:`lost` when the job is no longer ours."""

    def __init__(self, job_id: str, worker: str, settings: Settings) -> None:
        super().__init__(name=f"heartbeat-{job_id[:8]}", daemon=True)
        self.job_id, self.worker, self.settings = job_id, worker, settings
        self.lost = threading.Event()
        self._stop_event = threading.Event()

    def run(self) -> None:
        interval = max(min(self.settings.lease_seconds / 3.0, self.settings.stop_check_seconds), 0.05)
        while not self._stop_event.wait(interval):
            try:
                with session_scope(self.settings.database_url) as session:
                    alive = lifecycle.renew_lease(session, self.job_id, self.worker, self.settings.lease_seconds)
            except Exception:  # a database hiccup: keep trying until the lease runs out
                log.warning("job %s: lease renewal failed", self.job_id, exc_info=True)
                continue
            if not alive:
                log.warning("job %s: lease lost (cancelled or taken over); stopping", self.job_id)
                self.lost.set()
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


class ProgressReporter:
    """The runner's ``progress`` callback: throttled writes to the job row; raises :class:`JobAborted` once the
    heartbeat has lost the job."""

    def __init__(self, job_id: str, worker: str, settings: Settings, heartbeat: Heartbeat) -> None:
        self.job_id, self.worker, self.settings, self.heartbeat = job_id, worker, settings, heartbeat
        self._last_write = 0.0
        self._last_phase: Any = None
        self._train_origin: tuple[float, int] | None = None  # (time, epoch) of the first training report

    def _with_eta(self, event: dict, now: float) -> dict:
        """Add ``seconds_per_epoch`` and ``eta_seconds`` (of training) to a ``{"phase": "train", "epoch",
        "epochs"}`` report, from the epochs timed since the first one."""
        epoch, epochs = event.get("epoch"), event.get("epochs")
        if event.get("phase") != "train" or not isinstance(epoch, int) or not isinstance(epochs, int):
            return event
        if self._train_origin is None:
            self._train_origin = (now, epoch)
        start, first = self._train_origin
        if epoch <= first:
            return event
        per_epoch = (now - start) / (epoch - first)
        return {**event, "seconds_per_epoch": per_epoch, "eta_seconds": per_epoch * max(epochs - epoch, 0)}

    def __call__(self, event: dict) -> None:
        if self.heartbeat.lost.is_set():
            raise JobAborted("the job is no longer this worker's (cancelled or lease taken over)")
        now = time.monotonic()
        event = self._with_eta(event, now)
        phase = (event.get("phase"), event.get("step"))
        if phase == self._last_phase and now - self._last_write < self.settings.progress_interval:
            return
        self._last_write, self._last_phase = now, phase
        try:
            with session_scope(self.settings.database_url) as session:
                still_ours = lifecycle.update_progress(session, self.job_id, event, self.worker)
        except Exception:  # progress is best effort; the outcome is written by complete_job / fail_job
            log.warning("job %s: progress write failed", self.job_id, exc_info=True)
            return
        if not still_ours:
            self.heartbeat.lost.set()
            raise JobAborted("the job is no longer this worker's (cancelled or lease taken over)")


def load_spec(data: dict[str, Any]) -> JobSpec:
    """The JobSpec of a stored job (``jobs.spec`` holds ``spec.model_dump(mode="json")``, defaults filled in)."""
    return JobSpec.model_validate(data)


def _configure_torch(settings: Settings) -> None:
    if settings.torch_threads > 0:
        import torch

        if torch.get_num_threads() != settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)


def with_db_retry(settings: Settings, what: str, job_id: str, fn: Callable[[Session], T]) -> T:
    """``fn(session)`` in its own transaction, retried while the database is unreachable (up to
    ``settings.db_retry_seconds``, waits of 0.2 s doubling up to 2 s); then the last error is raised."""
    retrying = Retrying(
        stop=stop_after_delay(settings.db_retry_seconds),
        wait=wait_exponential(multiplier=0.2, max=2),
        retry=retry_if_exception_type(DB_UNAVAILABLE),
        before_sleep=lambda state: log.warning(
            "job %s: database unreachable (%s), retrying: %s", job_id, what, state.outcome.exception()
        ),
        reraise=True,
    )
    for attempt in retrying:
        with attempt, session_scope(settings.database_url) as session:
            return fn(session)
    raise AssertionError("unreachable")  # pragma: no cover  (Retrying re-raises the last error)


def execute_job(job_id: str, worker: str | None = None, settings: Settings | None = None) -> str:
    """Claim and run ``job_id``; returns what happened: ``"succeeded"``, ``"failed"``, ``"dropped"`` (not
    claimable: finished, cancelled or another worker's live lease), ``"cancelled"`` or ``"lost"`` (lease taken
    over while running).

    Raises:
        sqlalchemy.exc.OperationalError: the database stayed unreachable for ``settings.db_retry_seconds``.
    """
    settings = settings or get_settings()
    worker = worker or worker_name()
    job = with_db_retry(
        settings, "claim", job_id, lambda s: lifecycle.claim_job(s, job_id, worker, settings.lease_seconds)
    )
    if job is None:
        log.info("job %s: not claimable (finished, cancelled or running elsewhere); dropped", job_id)
        return "dropped"
    log.info("job %s (%s): claimed by %s, attempt %d", job_id, job.name, worker, job.attempts)

    heartbeat = Heartbeat(job_id, worker, settings)
    heartbeat.start()
    progress = ProgressReporter(job_id, worker, settings, heartbeat)
    try:
        # "artifact:<id>" (uploaded checkpoint / dataset) → the file under this machine's artifacts_dir
        spec = resolve_spec(load_spec(job.spec), settings.artifacts_dir)
        _configure_torch(settings)
        from evaluation.runner import JobStopped, run_job  # preloaded by the worker (worker.tasks); here for tests

        out_dir = settings.artifacts_dir / job_id
        try:
            result = run_job(
                spec,
                out_dir=out_dir,
                progress=progress,
                should_stop=heartbeat.lost.is_set,
                checkpoint_dir=out_dir / CHECKPOINTS_DIR,  # a re-run after a lost worker resumes from these
            )
        except JobStopped as exc:
            raise JobAborted(str(exc)) from None
        if heartbeat.lost.is_set():
            raise JobAborted("the job is no longer this worker's (cancelled or lease taken over)")
        info = dict(result.info)
        info["spec_hash"] = job.spec_hash  # of the spec as submitted (artifact references, not this machine's paths)
        info["artifacts_dir"] = str(out_dir)
        if (out_dir / JOB_WEIGHTS_FILE).is_file():  # kept: the job can be re-evaluated (db.reevaluation)
            info["weights"] = f"{job_id}/{JOB_WEIGHTS_FILE}"
        info["worker"] = worker
        done = with_db_retry(
            settings,
            "store results",
            job_id,
            lambda s: lifecycle.complete_job(s, job_id, result.metrics, info, worker=worker),
        )
        if done is None:
            return _aborted_outcome(job_id, worker, settings)
        log.info("job %s: succeeded (%d metrics)", job_id, len(result.metrics))
        return "succeeded"
    except JobAborted:
        return _aborted_outcome(job_id, worker, settings)
    except DB_UNAVAILABLE:  # not the job's fault: never stored as its error
        log.error("job %s: database unreachable for %.0f s; the job is re-run", job_id, settings.db_retry_seconds)
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        log.exception("job %s: failed: %s", job_id, error)
        failed = with_db_retry(
            settings, "store error", job_id, lambda s: lifecycle.fail_job(s, job_id, error, worker=worker)
        )
        return "failed" if failed is not None else _aborted_outcome(job_id, worker, settings)
    finally:
        heartbeat.stop()
        _release_gpu_memory()


def _release_gpu_memory() -> None:
    """Give the cached CUDA memory of a finished job back (after an out-of-memory error above all: the next job on
    this GPU starts from an empty cache). Nothing when CUDA was not used."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _aborted_outcome(job_id: str, worker: str, settings: Settings) -> str:
    job = with_db_retry(settings, "read outcome", job_id, lambda s: jobs.get_job(s, job_id))
    if job is not None and job.status == "succeeded" and job.worker == worker:
        # our complete_job committed but its reply was lost with the connection; the retry found it finished
        log.info("job %s: succeeded (stored before the connection dropped)", job_id)
        return "succeeded"
    outcome = "cancelled" if job is not None and job.status == "cancelled" else "lost"
    log.warning("job %s: stopped without storing a result (%s)", job_id, outcome)
    return outcome
