import sqlalchemy as sa

from recur.kit.db import UTCDateTime
from recur.kit.events import Outbox, inbox_table, outbox_table

metadata = sa.MetaData(schema="subscriptions")

products = sa.Table(
    "products",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.String(1000)),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Index("ix_products_tenant_id", "tenant_id", "id"),
)

plans = sa.Table(
    "plans",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("product_id", sa.String(40), sa.ForeignKey(products.c.id), nullable=False),
    sa.Column("nickname", sa.String(200)),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("amount", sa.BigInteger),  # null for tiered plans: their tiers carry the prices
    sa.Column("interval", sa.String(8), nullable=False),
    sa.Column("interval_count", sa.Integer, nullable=False),
    sa.Column("trial_days", sa.Integer, nullable=False),
    sa.Column("pricing_model", sa.String(20), nullable=False),
    # [{up_to, unit_amount, flat_amount}] of tiered plans; SQL NULL (not JSON null) otherwise.
    sa.Column("tiers", sa.JSON(none_as_null=True)),
    sa.Column("package_size", sa.Integer),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Index("ix_plans_tenant_id", "tenant_id", "id"),
)

test_clocks = sa.Table(
    "test_clocks",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("name", sa.String(200)),
    sa.Column("frozen_time", UTCDateTime, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("created", UTCDateTime, nullable=False),
)

# Coupons and tax rates adjust what orders cost. Percentages are exact decimals kept as text:
# SQLite has no decimal type, and a float never gets near money.
coupons = sa.Table(
    "coupons",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("name", sa.String(200)),
    sa.Column("percent_off", sa.String(12)),  # or amount_off and currency
    sa.Column("amount_off", sa.BigInteger),
    sa.Column("currency", sa.String(3)),
    sa.Column("duration", sa.String(10), nullable=False),
    sa.Column("duration_in_months", sa.Integer),
    sa.Column("max_redemptions", sa.Integer),
    sa.Column("redeem_by", UTCDateTime),
    # Raised only by UPDATE ... WHERE times_redeemed < max_redemptions, so two requests racing
    # for a coupon's last use cannot both get it.
    sa.Column("times_redeemed", sa.Integer, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Index("ix_coupons_tenant_id", "tenant_id", "id"),
)

# Who redeemed a coupon (a subscription or a one-off order): a use is counted once per
# redeemer, and one counted for an order that was never made can be given back.
coupon_redemptions = sa.Table(
    "coupon_redemptions",
    metadata,
    sa.Column("tenant_id", sa.String(40), primary_key=True),
    sa.Column("coupon_id", sa.String(40), sa.ForeignKey(coupons.c.id), primary_key=True),
    sa.Column("redeemed_by", sa.String(40), primary_key=True),
    sa.Column("created", UTCDateTime, nullable=False),
)

tax_rates = sa.Table(
    "tax_rates",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("display_name", sa.String(100), nullable=False),
    sa.Column("percentage", sa.String(12), nullable=False),
    sa.Column("inclusive", sa.Boolean, nullable=False),
    sa.Column("country", sa.String(2)),
    sa.Column("description", sa.String(500)),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Index("ix_tax_rates_tenant_id", "tenant_id", "id"),
)

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("customer_id", sa.String(40), nullable=False),
    sa.Column("plan_id", sa.String(40), sa.ForeignKey(plans.c.id), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("billing_cycle_anchor", UTCDateTime, nullable=False),
    sa.Column("period_index", sa.Integer, nullable=False),
    sa.Column("current_period_start", UTCDateTime, nullable=False),
    sa.Column("current_period_end", UTCDateTime, nullable=False),
    sa.Column("trial_start", UTCDateTime),
    sa.Column("trial_end", UTCDateTime),
    sa.Column("cancel_at_period_end", sa.Boolean, nullable=False),
    sa.Column("canceled_at", UTCDateTime),
    sa.Column("ended_at", UTCDateTime),
    sa.Column("latest_order_id", sa.String(40)),
    sa.Column("test_clock_id", sa.String(40), sa.ForeignKey(test_clocks.c.id)),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Column("updated", UTCDateTime, nullable=False),
    # When the billing engine must next act (period end, trial end); null once nothing is left.
    sa.Column("next_action_at", UTCDateTime),
    # A renewal under way: its period is ordered and charged idempotently, so a worker that
    # dies between steps leaves this set and the next run finishes the same period.
    sa.Column("pending_period_start", UTCDateTime),
    sa.Column("pending_period_end", UTCDateTime),
    # Credit owed to the customer for unused time (a resume's, for the paused period), granted
    # by the next step; `pending_credit_source` makes granting it twice grant it once.
    sa.Column("pending_credit", sa.BigInteger),
    sa.Column("pending_credit_source", sa.String(120)),
    sa.Column("paused_at", UTCDateTime),
    # Wall-clock lease of the worker that claimed the row.
    sa.Column("claimed_until", UTCDateTime),
    # The coupon applied when the subscription started, and when (in its time): a repeating
    # coupon's months count from there.
    sa.Column("coupon_id", sa.String(40), sa.ForeignKey(coupons.c.id)),
    sa.Column("discount_start", UTCDateTime),
    # A plan or quantity change scheduled for the end of the current period:
    # {"plan_id", "quantity"}; SQL NULL when none. Applied when the next period begins.
    sa.Column("pending_change", sa.JSON(none_as_null=True)),
    # What was paid (before tax) for the current plan and quantity from `proration_basis_from`
    # to the period's end, once a change within the period set it: the next change's credit
    # for unused time is prorated from it. Null (or from an earlier period): the period's order.
    sa.Column("proration_basis", sa.BigInteger),
    sa.Column("proration_basis_from", UTCDateTime),
    # An `always_invoice` change, or a cancel now with proration, whose prorations are not yet
    # ordered and charged (or, when they net to a credit, credited): its items are billed at
    # this key. Settled right after the change or cancel commits; if the process dies first,
    # by the subscription's next bill run (a canceled one stays due until then).
    sa.Column("pending_invoice_at", UTCDateTime),
    # The Idempotency-Key of the request that created it: a request carried out again after
    # the process running it died finds this subscription instead of starting (and charging)
    # a second one.
    sa.Column("request_key", sa.String(255)),
    sa.Index("ix_subscriptions_tenant_id", "tenant_id", "id"),
    sa.Index("uq_subscriptions_request_key", "tenant_id", "request_key", unique=True),
    sa.Index("ix_subscriptions_due", "next_action_at", "test_clock_id"),
)

# Prorations of plan and quantity changes, signed (credits are negative). Those of a
# `create_prorations` change wait unbilled until the next period begins: the transaction that
# writes the pending period sets `billed_period_start` to it, and that period's order carries
# them. Those of an `always_invoice` change are billed at once, at the subscription's
# `pending_invoice_at`, as are those a cancel now with proration settles (with its credit for
# unused time); a cancel without proration deletes the unbilled ones.
subscription_pending_items = sa.Table(
    "subscription_pending_items",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("subscription_id", sa.String(40), sa.ForeignKey(subscriptions.c.id), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("period_start", UTCDateTime, nullable=False),
    sa.Column("period_end", UTCDateTime, nullable=False),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Column("billed_period_start", UTCDateTime),
    sa.Index(
        "ix_subscription_pending_items_billing",
        "tenant_id",
        "subscription_id",
        "billed_period_start",
    ),
)

outbox = outbox_table(metadata, "subscriptions")
# Beside its table, so that every module of the service records events without import cycles.
OUTBOX = Outbox("subscriptions", outbox)
inbox = inbox_table(metadata, "subscriptions")
