"""The bottom layer: the job spec, the metric catalog, the service settings and provenance (the code identity,
:mod:`core.provenance`; the evaluation protocol version, :mod:`core.protocol`, which reads each evaluation module's
declared revision from its source without importing it).

Torch-free and importing nothing else of robustlab, so every other package (models, evaluation, db, worker, api,
cli) can import it and none of them needs to import upward for a schema or a metric's meaning.
"""
