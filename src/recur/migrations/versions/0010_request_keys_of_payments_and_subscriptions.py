"""request keys of payments and subscriptions

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25 01:50:00.000000
"""

import sqlalchemy as sa
from alembic import op

from recur.migrations import schema

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table, service in (("payments", "payments"), ("subscriptions", "subscriptions")):
        with op.batch_alter_table(table, schema=schema(service)) as batch:
            batch.add_column(sa.Column("request_key", sa.String(length=255), nullable=True))
        op.create_index(
            f"uq_{table}_request_key",
            table,
            ["tenant_id", "request_key"],
            unique=True,
            schema=schema(service),
        )


def downgrade() -> None:
    for table, service in (("payments", "payments"), ("subscriptions", "subscriptions")):
        op.drop_index(f"uq_{table}_request_key", table_name=table, schema=schema(service))
        with op.batch_alter_table(table, schema=schema(service)) as batch:
            batch.drop_column("request_key")
