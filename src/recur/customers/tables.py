import sqlalchemy as sa

from recur.kit.db import UTCDateTime, counters_table
from recur.kit.events import inbox_table, outbox_table
from recur.kit.ledger import ledger_table

metadata = sa.MetaData(schema="customers")

customers = sa.Table(
    "customers",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("number", sa.BigInteger, nullable=False),
    sa.Column("email", sa.String(320)),
    sa.Column("name", sa.String(200)),
    sa.Column("phone", sa.String(40)),
    sa.Column("description", sa.String(500)),
    sa.Column("address", sa.JSON),
    sa.Column("currency", sa.String(3)),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("default_payment_method_id", sa.String(40)),
    sa.Column("test_clock_id", sa.String(40)),
    # Ids of the Subscription Manager's tax rates that apply to all the customer's orders.
    sa.Column("tax_rate_ids", sa.JSON, nullable=False, server_default=sa.text("'[]'")),
    # Credit the customer holds, in its currency; spent on its next orders before any charge.
    sa.Column("balance", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Column("updated", UTCDateTime, nullable=False),
    sa.UniqueConstraint("tenant_id", "number", name="uq_customers_tenant_number"),
    sa.Index("ix_customers_tenant_id", "tenant_id", "id"),
)

# A read model of the customer's orders, payments and refunds, fed by their events.
billing_history = sa.Table(
    "customer_billing_history",
    metadata,
    # Time-ordered key of the entry, for pagination: object ids of different kinds don't sort.
    sa.Column("entry_id", sa.String(40), primary_key=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("customer_id", sa.String(40), nullable=False),
    sa.Column("object", sa.String(20), nullable=False),
    sa.Column("status", sa.String(30), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("description", sa.String(500)),
    sa.Column("order_id", sa.String(40)),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Column("updated", UTCDateTime, nullable=False),
    sa.Index("ix_customer_billing_history_customer", "tenant_id", "customer_id", "entry_id"),
)

# Every change of a customer's credit balance. `source_id` makes each change happen once: the
# order a credit was spent on, the subscription period a proration credited.
balance_transactions = sa.Table(
    "customer_balance_transactions",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("customer_id", sa.String(40), nullable=False),
    sa.Column("type", sa.String(30), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),  # + credit granted, - credit spent
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("ending_balance", sa.BigInteger, nullable=False),
    sa.Column("source_id", sa.String(80), nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.UniqueConstraint("tenant_id", "type", "source_id", name="uq_customer_balance_source"),
    sa.Index("ix_customer_balance_customer", "tenant_id", "customer_id", "id"),
)

counters = counters_table(metadata, "customers")
ledger = ledger_table(metadata, "customers")
outbox = outbox_table(metadata, "customers")
inbox = inbox_table(metadata, "customers")
