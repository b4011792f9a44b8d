import sqlalchemy as sa

from recur.kit.db import UTCDateTime
from recur.kit.events import Outbox, inbox_table, outbox_table
from recur.kit.ledger import ledger_table

metadata = sa.MetaData(schema="payments")

# A card is kept only as the gateway's token plus what a receipt shows. Never its number or CVC.
payment_methods = sa.Table(
    "payment_methods",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("customer_id", sa.String(40), nullable=False),
    sa.Column("gateway", sa.String(40), nullable=False),
    sa.Column("gateway_token", sa.String(255), nullable=False),
    sa.Column("brand", sa.String(20), nullable=False),
    sa.Column("last4", sa.String(4), nullable=False),
    sa.Column("exp_month", sa.Integer, nullable=False),
    sa.Column("exp_year", sa.Integer, nullable=False),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Column("detached_at", UTCDateTime),
    sa.Index("ix_payment_methods_customer", "tenant_id", "customer_id", "id"),
)

payments = sa.Table(
    "payments",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("customer_id", sa.String(40), nullable=False),
    sa.Column("order_id", sa.String(40)),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # pending, succeeded, failed
    sa.Column("failure_code", sa.String(60)),
    sa.Column("failure_message", sa.String(500)),
    sa.Column("amount_refunded", sa.BigInteger, nullable=False),
    sa.Column("payment_method_id", sa.String(40)),
    sa.Column("gateway", sa.String(40), nullable=False),
    sa.Column("gateway_reference", sa.String(255)),
    sa.Column("description", sa.String(500)),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Column("updated", UTCDateTime, nullable=False),
    sa.Index("ix_payments_tenant", "tenant_id", "id"),
    sa.Index("ix_payments_customer", "tenant_id", "customer_id", "id"),
    sa.Index("ix_payments_order", "tenant_id", "order_id", "id"),
    # An order is charged at most once: while one payment of it is pending or has succeeded,
    # the database refuses a second, whatever races the application loses.
    sa.Index(
        "uq_payments_order_active",
        "tenant_id",
        "order_id",
        unique=True,
        postgresql_where=sa.text("status IN ('pending', 'succeeded')"),
        sqlite_where=sa.text("status IN ('pending', 'succeeded')"),
    ),
)

refunds = sa.Table(
    "refunds",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("payment_id", sa.String(40), sa.ForeignKey(payments.c.id), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # pending, succeeded, failed
    sa.Column("reason", sa.String(40)),
    sa.Column("gateway_reference", sa.String(255)),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Index("ix_refunds_tenant", "tenant_id", "id"),
    sa.Index("ix_refunds_payment", "tenant_id", "payment_id", "id"),
)

# Dunning: one row per subscription order whose charge failed, retried on the tenant's
# schedule. Times are in the subscription's clock (its test clock's, or the real one);
# `next_retry_at` is always first_failed_at + retry_days[attempts] (anchored, like periods).
payment_dunning = sa.Table(
    "payment_dunning",
    metadata,
    sa.Column("order_id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("customer_id", sa.String(40), nullable=False),
    sa.Column("subscription_id", sa.String(40), nullable=False),
    sa.Column("test_clock_id", sa.String(40)),
    sa.Column("status", sa.String(20), nullable=False),  # open, recovered, exhausted, closed
    sa.Column("attempts", sa.Integer, nullable=False),  # retries made, the first charge not counted
    sa.Column("first_failed_at", UTCDateTime, nullable=False),
    sa.Column("next_retry_at", UTCDateTime),  # null once the record is no longer open
    # The card the last attempt used: a new default card is worth a retry at once.
    sa.Column("last_payment_method_id", sa.String(40)),
    # Wall-clock lease of the worker retrying it.
    sa.Column("claimed_until", UTCDateTime),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Column("updated", UTCDateTime, nullable=False),
    sa.Index("ix_payment_dunning_due", "next_retry_at", "test_clock_id"),
    sa.Index("ix_payment_dunning_customer", "tenant_id", "customer_id", "status"),
)

# A tenant's retry schedule; a tenant without a row has the defaults (dunning.DEFAULT_*).
payments_dunning_settings = sa.Table(
    "payments_dunning_settings",
    metadata,
    sa.Column("tenant_id", sa.String(40), primary_key=True),
    sa.Column("retry_days", sa.JSON, nullable=False),  # days after the first failure, increasing
    sa.Column("final_action", sa.String(10), nullable=False),  # cancel or unpaid
    sa.Column("updated", UTCDateTime, nullable=False),
)

outbox = outbox_table(metadata, "payments")
# Beside its table, so that every module of the service records events without import cycles.
OUTBOX = Outbox("payments", outbox)
ledger = ledger_table(metadata, "payments")
inbox = inbox_table(metadata, "payments")
