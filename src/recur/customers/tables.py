import sqlalchemy as sa

from recur.kit.db import UTCDateTime, counters_table
from recur.kit.events import inbox_table, outbox_table

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

counters = counters_table(metadata, "customers")
outbox = outbox_table(metadata, "customers")
inbox = inbox_table(metadata, "customers")
