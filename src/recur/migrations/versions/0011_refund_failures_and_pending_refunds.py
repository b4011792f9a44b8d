"""why a refund failed; pending refunds indexed for the reconciler

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25 09:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

from recur.migrations import schema

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("refunds", schema=schema("payments")) as batch:
        batch.add_column(sa.Column("failure_code", sa.String(length=60), nullable=True))
        batch.add_column(sa.Column("failure_message", sa.String(length=500), nullable=True))
    op.create_index(
        "ix_refunds_pending",
        "refunds",
        ["created"],
        unique=False,
        schema=schema("payments"),
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_refunds_pending", table_name="refunds", schema=schema("payments"))
    with op.batch_alter_table("refunds", schema=schema("payments")) as batch:
        batch.drop_column("failure_message")
        batch.drop_column("failure_code")
