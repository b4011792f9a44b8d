"""payment attempts, routing reasons and cards tokenized at several gateways

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 01:05:00.000000
"""

import sqlalchemy as sa
from alembic import op

import recur.kit.db
from recur.migrations import qualified, schema

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "payments", sa.Column("routing_reason", sa.Text(), nullable=True), schema=schema("payments")
    )
    op.add_column(
        "payments",
        sa.Column("routing_rule_id", sa.String(length=40), nullable=True),
        schema=schema("payments"),
    )
    op.create_index(
        "ix_payments_pending",
        "payments",
        ["updated"],
        unique=False,
        schema=schema("payments"),
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "payment_attempts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("gateway", sa.String(length=40), nullable=False),
        sa.Column("idempotency_key", sa.String(length=80), nullable=False),
        sa.Column("token", sa.String(length=255), nullable=True),
        sa.Column("outcome", sa.String(length=20), nullable=True),
        sa.Column("failure_code", sa.String(length=60), nullable=True),
        sa.Column("failure_message", sa.String(length=500), nullable=True),
        sa.Column("gateway_reference", sa.String(length=255), nullable=True),
        sa.Column("created", recur.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("settled_at", recur.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["payment_id"], [qualified("payments", "payments.id")]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("payment_id", "number", name="uq_payment_attempts_number"),
        sa.UniqueConstraint("idempotency_key", name="uq_payment_attempts_key"),
        schema=schema("payments"),
    )
    op.create_index(
        "ix_payment_attempts_tenant",
        "payment_attempts",
        ["tenant_id", "payment_id"],
        unique=False,
        schema=schema("payments"),
    )
    op.create_table(
        "payment_method_tokens",
        sa.Column("payment_method_id", sa.String(length=40), nullable=False),
        sa.Column("gateway", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("token", sa.String(length=255), nullable=False),
        sa.Column("created", recur.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("payment_method_id", "gateway"),
        schema=schema("payments"),
    )


def downgrade() -> None:
    op.drop_table("payment_method_tokens", schema=schema("payments"))
    op.drop_index(
        "ix_payment_attempts_tenant", table_name="payment_attempts", schema=schema("payments")
    )
    op.drop_table("payment_attempts", schema=schema("payments"))
    op.drop_index("ix_payments_pending", table_name="payments", schema=schema("payments"))
    op.drop_column("payments", "routing_rule_id", schema=schema("payments"))
    op.drop_column("payments", "routing_reason", schema=schema("payments"))
