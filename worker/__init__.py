"""Celery worker: :mod:`worker.celery_app` (configuration, also used by the API as a client to enqueue by task
name) and :mod:`worker.tasks` (the ``robustlab.run_job`` task, which runs a job claimed in the database)."""
