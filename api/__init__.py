"""robustlab REST API (FastAPI): ``create_app()`` in :mod:`api.main`, one router per resource in ``api/routes``."""
