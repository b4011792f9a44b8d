import sqlalchemy as sa

from recur.kit.db import UTCDateTime, counters_table
from recur.kit.events import inbox_table, outbox_table
from recur.kit.ledger import ledger_table

metadata = sa.MetaData(schema="orders")

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("customer_id", sa.String(40), nullable=False),
    sa.Column("subscription_id", sa.String(40)),
    # Given at finalization from the tenant's gapless counter; drafts have none.
    sa.Column("number", sa.BigInteger),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("subtotal", sa.BigInteger, nullable=False),
    # Discount and tax as computed when the order was made (orders.totals), with copies of the
    # coupon's name and the tax rates, so later catalog changes never rewrite an issued order.
    # total = subtotal - discount_amount + the tax not included in prices.
    sa.Column("discount_amount", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("coupon_id", sa.String(40)),
    sa.Column("coupon_name", sa.String(200)),
    sa.Column("tax", sa.BigInteger, nullable=False, server_default="0"),
    # [{tax_rate_id, display_name, percentage (text), inclusive, amount}]
    sa.Column("tax_amounts", sa.JSON, nullable=False, server_default=sa.text("'[]'")),
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Column("amount_paid", sa.BigInteger, nullable=False),
    # Paid from the customer\'s credit balance, before any charge.
    sa.Column("credit_applied", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("period_start", UTCDateTime),
    sa.Column("period_end", UTCDateTime),
    # Text, not String(n): the billing engine writes descriptions of any length.
    sa.Column("description", sa.Text),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Column("finalized_at", UTCDateTime),
    sa.Column("paid_at", UTCDateTime),
    sa.Column("voided_at", UTCDateTime),
    sa.Column("marked_uncollectible_at", UTCDateTime),
    sa.Column("updated", UTCDateTime, nullable=False),
    sa.UniqueConstraint("tenant_id", "number", name="uq_orders_tenant_number"),
    # One renewal per subscription period, even across crashes and reruns of the bill run.
    # One-off orders have no subscription: NULLs never collide.
    sa.UniqueConstraint(
        "tenant_id", "subscription_id", "period_start", name="uq_orders_subscription_period"
    ),
    sa.Index("ix_orders_tenant_id", "tenant_id", "id"),
    sa.Index("ix_orders_tenant_customer", "tenant_id", "customer_id", "id"),
    # The bill run looks periods' orders up by subscription alone (see repository.by_periods).
    sa.Index("ix_orders_subscription_period", "subscription_id", "period_start"),
)

order_lines = sa.Table(
    "order_lines",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("order_id", sa.String(40), sa.ForeignKey(orders.c.id), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("quantity", sa.BigInteger, nullable=False),
    sa.Column("unit_amount", sa.BigInteger, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("period_start", UTCDateTime),
    sa.Column("period_end", UTCDateTime),
    sa.UniqueConstraint("order_id", "position", name="uq_order_lines_position"),
)

counters = counters_table(metadata, "orders")
outbox = outbox_table(metadata, "orders")
inbox = inbox_table(metadata, "orders")
ledger = ledger_table(metadata, "orders")
