"""subscription plan and quantity changes: pending proration items, scheduled changes

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 22:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

import recur.kit.db
from recur.migrations import qualified, schema

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscription_pending_items",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("subscription_id", sa.String(length=40), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("period_start", recur.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("period_end", recur.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created", recur.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("billed_period_start", recur.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["subscription_id"], [qualified("subscriptions", "subscriptions.id")]
        ),
        sa.PrimaryKeyConstraint("id"),
        schema=schema("subscriptions"),
    )
    op.create_index(
        "ix_subscription_pending_items_billing",
        "subscription_pending_items",
        ["tenant_id", "subscription_id", "billed_period_start"],
        unique=False,
        schema=schema("subscriptions"),
    )
    op.add_column(
        "subscriptions",
        sa.Column("pending_change", sa.JSON(none_as_null=True), nullable=True),
        schema=schema("subscriptions"),
    )
    op.add_column(
        "subscriptions",
        sa.Column("proration_basis", sa.BigInteger(), nullable=True),
        schema=schema("subscriptions"),
    )
    op.add_column(
        "subscriptions",
        sa.Column("proration_basis_from", recur.kit.db.UTCDateTime(timezone=True), nullable=True),
        schema=schema("subscriptions"),
    )
    op.add_column(
        "subscriptions",
        sa.Column("pending_invoice_at", recur.kit.db.UTCDateTime(timezone=True), nullable=True),
        schema=schema("subscriptions"),
    )


def downgrade() -> None:
    op.drop_column("subscriptions", "pending_invoice_at", schema=schema("subscriptions"))
    op.drop_column("subscriptions", "proration_basis_from", schema=schema("subscriptions"))
    op.drop_column("subscriptions", "proration_basis", schema=schema("subscriptions"))
    op.drop_column("subscriptions", "pending_change", schema=schema("subscriptions"))
    op.drop_index(
        "ix_subscription_pending_items_billing",
        table_name="subscription_pending_items",
        schema=schema("subscriptions"),
    )
    op.drop_table("subscription_pending_items", schema=schema("subscriptions"))
