"""docker-compose.yml and the Dockerfile describe the scaled-out deployment (no Docker engine needed)."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_services_exist() -> None:
    assert {"api", "worker", "redis", "postgres"} <= set(compose()["services"])


def test_api_and_worker_share_database_broker_and_artifacts() -> None:
    services = compose()["services"]
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert env["ROBUSTLAB_DATABASE_URL"] == "postgresql+psycopg://robustlab:robustlab@postgres:5432/robustlab"
        assert env["ROBUSTLAB_BROKER_URL"] == "redis://redis:6379/0"
        assert any(v.startswith("artifacts:") for v in services[name]["volumes"])
    assert "robustlab db upgrade" in " ".join(services["api"]["command"])
    assert "uvicorn api.main:app --host 0.0.0.0" in " ".join(services["api"]["command"])
    worker = " ".join(services["worker"]["command"])
    assert "celery -A worker.celery_app worker" in worker and "-Q cpu" in worker
    assert "artifacts" in compose()["volumes"]


def test_dockerfile_pins_cpu_torch_and_installs_torchattacks_alone() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert text.startswith("# ") and "FROM python:3.11-slim" in text
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in text
    assert "pip install --no-deps torchattacks==3.5.1" in text
    assert text.index("RUN pip install torch==2.13.0") < text.index("RUN pip install .")
