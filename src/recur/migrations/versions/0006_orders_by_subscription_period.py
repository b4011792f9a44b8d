"""orders by subscription and period

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 00:05:00.000000
"""

from alembic import op

from recur.migrations import schema

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_orders_subscription_period",
        "orders",
        ["subscription_id", "period_start"],
        unique=False,
        schema=schema("orders"),
    )


def downgrade() -> None:
    op.drop_index("ix_orders_subscription_period", table_name="orders", schema=schema("orders"))
