"""Provenance: jobs.protocol_version, jobs.reevaluation_of, jobs.weights_kept; jobs.code_version holds a code identity

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

``code_version`` grows from 32 to 100 characters (``<version>+g<commit>.dirty.<digest>``). Jobs stored before this
revision keep ``protocol_version`` NULL: evaluated under an unrecorded protocol, they are stale. A succeeded job whose
worker recorded its artifacts directory (every job the worker ran and stored) kept its weights there.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch mode: SQLite cannot ALTER a table in place; on PostgreSQL these are plain ALTER TABLE statements
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("code_version", existing_type=sa.String(32), type_=sa.String(100), existing_nullable=True)
        batch.add_column(sa.Column("protocol_version", sa.String(255), nullable=True))
        batch.add_column(sa.Column("reevaluation_of", sa.String(36), nullable=True))
        batch.add_column(sa.Column("weights_kept", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.create_foreign_key(
            op.f("fk_jobs_reevaluation_of_jobs"), "jobs", ["reevaluation_of"], ["id"], ondelete="SET NULL"
        )
        batch.create_index(op.f("ix_jobs_reevaluation_of"), ["reevaluation_of"])
    kept = (
        "info->>'artifacts_dir' IS NOT NULL"
        if op.get_bind().dialect.name == "postgresql"
        else "json_extract(info, '$.artifacts_dir') IS NOT NULL"
    )
    op.execute(f"UPDATE jobs SET weights_kept = TRUE WHERE status = 'succeeded' AND {kept}")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index(op.f("ix_jobs_reevaluation_of"))
        batch.drop_constraint(op.f("fk_jobs_reevaluation_of_jobs"), type_="foreignkey")
        batch.drop_column("weights_kept")
        batch.drop_column("reevaluation_of")
        batch.drop_column("protocol_version")
        batch.alter_column("code_version", existing_type=sa.String(100), type_=sa.String(32), existing_nullable=True)
