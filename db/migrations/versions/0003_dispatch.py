"""jobs.redispatch_at: when the recovery sweep may send a still-queued job to the broker again

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch mode: SQLite cannot ALTER a table in place; on PostgreSQL this is a plain ALTER TABLE … ADD COLUMN
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("redispatch_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("redispatch_at")
