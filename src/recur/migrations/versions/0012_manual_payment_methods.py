"""manual payment methods: a bank transfer or cash has no card details

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-25 05:10:00.000000
"""

import sqlalchemy as sa
from alembic import op

from recur.migrations import schema

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

CARD_COLUMNS = (
    ("brand", sa.String(length=20)),
    ("last4", sa.String(length=4)),
    ("exp_month", sa.Integer()),
    ("exp_year", sa.Integer()),
)


def upgrade() -> None:
    with op.batch_alter_table("payment_methods", schema=schema("payments")) as batch:
        for name, type_ in CARD_COLUMNS:
            batch.alter_column(name, existing_type=type_, nullable=True)


def downgrade() -> None:
    # The old columns want card details: a manual method keeps its row (payments name it), with
    # its type in place of a brand and zeros for the rest.
    table = sa.table(
        "payment_methods",
        sa.column("gateway_token"),
        *(sa.column(name) for name, _ in CARD_COLUMNS),
        schema=schema("payments"),
    )
    op.execute(
        table.update()
        .where(table.c.brand.is_(None))
        .values(
            brand=sa.func.replace(table.c.gateway_token, "manual_", ""),
            last4="0000",
            exp_month=1,
            exp_year=2000,
        )
    )
    with op.batch_alter_table("payment_methods", schema=schema("payments")) as batch:
        for name, type_ in CARD_COLUMNS:
            batch.alter_column(name, existing_type=type_, nullable=False)
