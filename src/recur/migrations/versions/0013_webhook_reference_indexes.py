"""gateway references of attempts and refunds indexed, for the webhooks

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-25 05:20:00.000000
"""

from alembic import op

from recur.migrations import schema

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_payment_attempts_gateway_reference",
        "payment_attempts",
        ["gateway", "gateway_reference"],
        unique=False,
        schema=schema("payments"),
    )
    op.create_index(
        "ix_refunds_gateway_reference",
        "refunds",
        ["gateway_reference"],
        unique=False,
        schema=schema("payments"),
    )


def downgrade() -> None:
    op.drop_index("ix_refunds_gateway_reference", table_name="refunds", schema=schema("payments"))
    op.drop_index(
        "ix_payment_attempts_gateway_reference",
        table_name="payment_attempts",
        schema=schema("payments"),
    )
