import sqlalchemy as sa

from recur.kit.db import UTCDateTime

metadata = sa.MetaData(schema="gateway")

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("created", UTCDateTime, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey(tenants.c.id), nullable=False),
    # SHA-256 of the secret; the secret itself is shown once and never stored.
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("tenant_id", sa.String(40), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),  # null while the first request runs
    sa.Column("response_body", sa.LargeBinary, nullable=True),
    sa.Column("content_type", sa.String(100), nullable=True),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Index("ix_gateway_idempotency_created", "created"),
)
