"""payment gateways' credentials and routing rules

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 00:36:40.000000
"""

import sqlalchemy as sa
from alembic import op

import recur.kit.db
from recur.migrations import schema

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payment_gateways",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=20), nullable=False),
        sa.Column("credentials_encrypted", sa.Text(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created", recur.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated", recur.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "name", name="uq_payment_gateways_tenant_name"),
        schema=schema("payments"),
    )
    op.create_table(
        "payment_routing_rules",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("amount_min", sa.BigInteger(), nullable=True),
        sa.Column("amount_max", sa.BigInteger(), nullable=True),
        sa.Column("card_brand", sa.String(length=20), nullable=True),
        sa.Column("gateways", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("split", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("created", recur.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated", recur.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        schema=schema("payments"),
    )
    op.create_index(
        "ix_payment_routing_rules_tenant",
        "payment_routing_rules",
        ["tenant_id", "priority", "id"],
        unique=False,
        schema=schema("payments"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_payment_routing_rules_tenant",
        table_name="payment_routing_rules",
        schema=schema("payments"),
    )
    op.drop_table("payment_routing_rules", schema=schema("payments"))
    op.drop_table("payment_gateways", schema=schema("payments"))
