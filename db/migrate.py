"""Run the Alembic migrations programmatically (``robustlab db upgrade``, ``robustlab up``, tests).

The script location is this package's ``migrations`` directory, so it works from a checkout and from an installed
wheel alike; the repository's ``alembic.ini`` points at the same directory for the ``alembic`` command.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from core.config import get_settings

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for ``url`` (default: ``settings.database_url``) that leaves logging alone."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation: a literal % (URL-encoded passwords) must be doubled.
    cfg.set_main_option("sqlalchemy.url", (url or get_settings().database_url).replace("%", "%%"))
    cfg.attributes["configure_logging"] = False
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """``alembic upgrade head`` on ``url`` (default: ``settings.database_url``)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def current(url: str | None = None) -> str | None:
    """The revision the database is at (``None`` for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    from db.session import get_engine

    with get_engine(url or get_settings().database_url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
