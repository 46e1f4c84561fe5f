"""Service settings (pydantic-settings), read from ``ROBUSTLAB_*`` environment variables or a ``.env`` file.

The one ``Settings`` class of the API, the worker and the CLI; it lives in the bottom layer (``core``) so that every
package reads it without importing upward.
Defaults are the *embedded* set-up: SQLite for the database and Celery's SQLAlchemy transport on SQLite as the
broker, so ``robustlab up`` needs no service. Point ``ROBUSTLAB_DATABASE_URL`` at PostgreSQL and
``ROBUSTLAB_BROKER_URL`` at Redis to scale out.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """``<the user's cache>/robustlab/data`` (``~/.cache/robustlab/data`` on Linux, by platformdirs)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("robustlab")) / "data"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROBUSTLAB_", env_file=".env", extra="ignore")

    database_url: str = Field("sqlite:///./robustlab.db", description="SQLAlchemy URL of the job/result database")
    broker_url: str = Field("sqla+sqlite:///./robustlab-broker.db", description="Celery broker URL")
    artifacts_dir: Path = Field(Path("./artifacts"), description="where checkpoints and plots of jobs are stored")
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="where the files of the published image datasets (MNIST, Fashion-MNIST, CIFAR) are read from, "
        "and downloaded to once when missing",
    )
    server_url: str = Field("http://127.0.0.1:8000", description="API address used by the CLI")
    lease_seconds: float = Field(60.0, gt=0, description="a running job's DB lease; renewed by a heartbeat")
    worker_concurrency: int = Field(1, ge=1, description="jobs one worker process runs at once")
    progress_interval: float = Field(0.5, ge=0, description="minimum seconds between progress writes")
    stop_check_seconds: float = Field(
        1.0,
        gt=0,
        description="how often a worker renews a running job's lease, and so sees that it was cancelled (or taken "
        "over): the job then stops at the model's next forward pass, in any phase",
    )
    max_attempts: int = Field(3, ge=1, description="a job whose worker was lost this many times is failed, not re-run")
    recovery_interval: float = Field(
        30.0,
        gt=0,
        description="seconds between the API's sweeps that re-dispatch jobs whose worker's lease expired and queued "
        "jobs the broker may have lost",
    )
    redispatch_after: float = Field(
        60.0,
        gt=0,
        description="seconds a job may wait in the queue before the API's recovery sweep sends it to the broker again "
        "(the broker may have lost it); later re-sends back off with the job's age",
    )
    redispatch_max_interval: float = Field(
        600.0, gt=0, description="the longest back-off between two re-sends of a job that is still queued"
    )
    broker_timeout: float = Field(3.0, gt=0, description="seconds to wait for the broker (enqueue, health check)")
    db_wait_seconds: float = Field(60.0, ge=0, description="how long a starting worker waits for the database")
    db_retry_seconds: float = Field(
        300.0,
        ge=0,
        description="how long a worker retries a database write that claims or finishes a job (database down) "
        "before giving the job back to the recovery sweep",
    )
    torch_threads: int = Field(
        1,
        ge=0,
        description="torch intra-op threads per job process (0: torch's default); 1 is fastest for small models",
    )

    # ------------------------------------------------------------------------------------------------ API security
    auth: Literal["open", "keys"] = Field(
        "open",
        description="'open': no authentication (the embedded default, for localhost); 'keys': Bearer API keys "
        "(`robustlab keys create`) are required to write, and to read unless public_read",
    )
    public_read: bool = Field(True, description="with auth=keys, reading (jobs, results, leaderboard) needs no key")
    api_key: str | None = Field(None, description="the Bearer key the CLI sends to the server")
    rate_limit: float = Field(
        20.0,
        ge=0,
        description="with auth=keys: sustained requests per second per API key (per client IP without one, and per "
        "client IP for invalid keys); 0 = off",
    )
    rate_limit_burst: int = Field(
        100, ge=1, description="the per-key rate limit allows this many requests in any burst/rate seconds"
    )
    rate_limit_storage: str | None = Field(
        None,
        description="where the rate-limit counters live, shared by all API processes (a `limits` storage URL such "
        "as redis://host:6379/0); default: the broker's Redis, else this process's memory",
    )
    max_parameters: float = Field(
        1e8, ge=0, description="largest estimated parameter count of a submitted job's model (0 = no limit)"
    )
    max_activation_bytes: float = Field(
        8 * 2**30,
        ge=0,
        description="largest estimated activation memory of a job (training batch or attacked test set, float32)",
    )
    max_eval_passes: float = Field(
        1e6,
        ge=0,
        description="most passes over the test set a job's evaluation may make (Gaussian draws, attack steps × "
        "restarts × ε × norms, AutoAttack steps and queries, plug-and-play iterations)",
    )
    max_eval_work: float = Field(
        5e15, ge=0, description="largest estimated evaluation work: passes × n_test × width² × depth (0 = no limit)"
    )
    max_spec_bytes: int = Field(64 * 1024, ge=1024, description="largest JSON request body (a job spec), in bytes")
    max_upload_bytes: int = Field(
        100 * 1024 * 1024, ge=1024, description="largest uploaded checkpoint or dataset file, in bytes"
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
