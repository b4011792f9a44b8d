"""gateway webhook events, pending refunds and disputes

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 01:05:00.000000
"""

import sqlalchemy as sa
from alembic import op

import recur.kit.db
from recur.migrations import schema

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "payments",
        sa.Column("dispute_status", sa.String(length=20), nullable=True),
        schema=schema("payments"),
    )
    op.add_column(
        "payments",
        sa.Column("amount_disputed", sa.BigInteger(), server_default="0", nullable=False),
        schema=schema("payments"),
    )
    op.create_index(
        "ix_payments_gateway_reference",
        "payments",
        ["gateway", "gateway_reference"],
        unique=False,
        schema=schema("payments"),
    )
    op.create_table(
        "gateway_events",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("gateway", sa.String(length=20), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("gateway_type", sa.String(length=100), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=True),
        sa.Column("refund_id", sa.String(length=40), nullable=True),
        sa.Column("outcome", sa.String(length=40), nullable=False),
        sa.Column("received", recur.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("gateway", "event_id", name="uq_gateway_events_gateway_event"),
        schema=schema("payments"),
    )
    op.create_index(
        "ix_gateway_events_payment",
        "gateway_events",
        ["tenant_id", "payment_id"],
        unique=False,
        schema=schema("payments"),
    )
    op.create_table(
        "payment_operator_marks",
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("paid", sa.Boolean(), nullable=False),
        sa.Column("marked_by", sa.String(length=80), nullable=False),
        sa.Column("marked_at", recur.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reference", sa.String(length=255), nullable=True),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("payment_id"),
        schema=schema("payments"),
    )


def downgrade() -> None:
    op.drop_table("payment_operator_marks", schema=schema("payments"))
    op.drop_index(
        "ix_gateway_events_payment", table_name="gateway_events", schema=schema("payments")
    )
    op.drop_table("gateway_events", schema=schema("payments"))
    op.drop_index("ix_payments_gateway_reference", table_name="payments", schema=schema("payments"))
    with op.batch_alter_table("payments", schema=schema("payments")) as batch:
        batch.drop_column("amount_disputed")
        batch.drop_column("dispute_status")
