"""The bottom layer: the job spec, the metric catalog and the service settings.

Torch-free and importing nothing else of robustlab, so every other package (models, evaluation, db, worker, api,
cli) can import it and none of them needs to import upward for a schema or a metric's meaning.
"""
