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
    # A card's; null for a manual method (bank transfer, cash).
    sa.Column("brand", sa.String(20)),
    sa.Column("last4", sa.String(4)),
    sa.Column("exp_month", sa.Integer),
    sa.Column("exp_year", sa.Integer),
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
    # A dispute (chargeback) from the gateway's webhooks: open, won or lost; see disputes.py.
    sa.Column("dispute_status", sa.String(20)),
    sa.Column("amount_disputed", sa.BigInteger, nullable=False, default=0, server_default="0"),
    # Why the payment went to its gateways (routing.Route.reason), and the rule that decided.
    sa.Column("routing_reason", sa.Text),
    sa.Column("routing_rule_id", sa.String(40)),
    # The Idempotency-Key of the request that created it: a request carried out again after
    # the process running it died finds this payment instead of charging a second one.
    sa.Column("request_key", sa.String(255)),
    sa.Index("ix_payments_tenant", "tenant_id", "id"),
    sa.Index("uq_payments_request_key", "tenant_id", "request_key", unique=True),
    # Gateway webhooks find the payment by the gateway's reference of the charge.
    sa.Index("ix_payments_gateway_reference", "gateway", "gateway_reference"),
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

# The reconciler's work: pending payments, oldest first.
sa.Index(
    "ix_payments_pending",
    payments.c.updated,
    postgresql_where=payments.c.status == "pending",
    sqlite_where=payments.c.status == "pending",
)

# One row per charge sent (or skipped) at one gateway for a payment, in order. Every charge
# carries the attempt's `idempotency_key`; `outcome` is null while the call is under way, then
# succeeded, declined, retriable_error, unknown (maybe charged: the reconciler asks) or skipped
# (breaker open, no token there). `token` is the gateway token charged (never a card number),
# kept so that the reconciler asks the gateway about exactly what was sent.
payment_attempts = sa.Table(
    "payment_attempts",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("payment_id", sa.String(40), sa.ForeignKey(payments.c.id), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("gateway", sa.String(40), nullable=False),
    sa.Column("idempotency_key", sa.String(80), nullable=False),
    sa.Column("token", sa.String(255)),
    sa.Column("outcome", sa.String(20)),
    sa.Column("failure_code", sa.String(60)),
    sa.Column("failure_message", sa.String(500)),
    sa.Column("gateway_reference", sa.String(255)),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Column("settled_at", UTCDateTime),
    sa.UniqueConstraint("payment_id", "number", name="uq_payment_attempts_number"),
    sa.UniqueConstraint("idempotency_key", name="uq_payment_attempts_key"),
    sa.Index("ix_payment_attempts_tenant", "tenant_id", "payment_id"),
    # A gateway's webhook names its own reference of a charge (no API key, any sender).
    sa.Index("ix_payment_attempts_gateway_reference", "gateway", "gateway_reference"),
)

# A card attached once, tokenized at each of the tenant's gateways: the token to charge there.
# The first gateway's token is also the payment method's own `gateway_token`.
payment_method_tokens = sa.Table(
    "payment_method_tokens",
    metadata,
    sa.Column("payment_method_id", sa.String(40), primary_key=True),
    sa.Column("gateway", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("token", sa.String(255), nullable=False),
    sa.Column("created", UTCDateTime, nullable=False),
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
    sa.Column("failure_code", sa.String(60)),
    sa.Column("failure_message", sa.String(500)),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Index("ix_refunds_tenant", "tenant_id", "id"),
    sa.Index("ix_refunds_payment", "tenant_id", "payment_id", "id"),
    # A gateway's webhook names its own reference of a refund.
    sa.Index("ix_refunds_gateway_reference", "gateway_reference"),
    # The reconciler's work: pending refunds, oldest first.
    sa.Index(
        "ix_refunds_pending",
        "created",
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    ),
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

# A tenant's account at a payment gateway. The credentials are kept only as a Fernet token
# (settings' gateway_credentials_key), null when the gateway needs none; `summary` is what may
# be shown of them (the last characters of a key, the merchant account).
payment_gateways = sa.Table(
    "payment_gateways",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("name", sa.String(20), nullable=False),  # sandbox, stripe, adyen, manual
    sa.Column("credentials_encrypted", sa.Text),
    sa.Column("summary", sa.JSON, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Column("updated", UTCDateTime, nullable=False),
    sa.UniqueConstraint("tenant_id", "name", name="uq_payment_gateways_tenant_name"),
)

# A tenant's routing rules, tried by priority (lowest first, then oldest); see routing.py.
# Exactly one of `gateways` (names in failover order) and `split` ([{gateway, percent}]) is set.
payment_routing_rules = sa.Table(
    "payment_routing_rules",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("currency", sa.String(3)),
    sa.Column("amount_min", sa.BigInteger),  # inclusive, minor units
    sa.Column("amount_max", sa.BigInteger),  # inclusive, minor units
    sa.Column("card_brand", sa.String(20)),
    sa.Column("gateways", sa.JSON(none_as_null=True)),
    sa.Column("split", sa.JSON(none_as_null=True)),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Column("updated", UTCDateTime, nullable=False),
    sa.Index("ix_payment_routing_rules_tenant", "tenant_id", "priority", "id"),
)

# Gateway webhooks, kept once by the gateway's event id (redeliveries answer 200 and change
# nothing); `outcome` says what Recur did with it (see webhooks.py).
gateway_events = sa.Table(
    "gateway_events",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("gateway", sa.String(20), nullable=False),
    sa.Column("event_id", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("gateway_type", sa.String(100), nullable=False),
    sa.Column("payment_id", sa.String(40)),
    sa.Column("refund_id", sa.String(40)),
    sa.Column("outcome", sa.String(40), nullable=False),
    sa.Column("received", UTCDateTime, nullable=False),
    sa.UniqueConstraint("gateway", "event_id", name="uq_gateway_events_gateway_event"),
    sa.Index("ix_gateway_events_payment", "tenant_id", "payment_id"),
)

# An operator's word on a manual payment (bank transfer, cash): paid or not. One per payment.
payment_operator_marks = sa.Table(
    "payment_operator_marks",
    metadata,
    sa.Column("payment_id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("paid", sa.Boolean, nullable=False),
    sa.Column("marked_by", sa.String(80), nullable=False),
    sa.Column("marked_at", UTCDateTime, nullable=False),
    sa.Column("reference", sa.String(255)),
    sa.Column("note", sa.String(500)),
)

outbox = outbox_table(metadata, "payments")
# Beside its table, so that every module of the service records events without import cycles.
OUTBOX = Outbox("payments", outbox)
ledger = ledger_table(metadata, "payments")
inbox = inbox_table(metadata, "payments")
