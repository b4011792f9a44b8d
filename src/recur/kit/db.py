"""Database engine, column types and the unit of work, for PostgreSQL and SQLite alike.

Every service keeps its tables in its own PostgreSQL schema. SQLite has no schemas, so on SQLite
the schema names are translated away and the services share one file; table names are unique
across services for that reason.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from recur.kit.cache import DISABLED, Cache

if TYPE_CHECKING:
    from recur.kit.events import Event, EventBus

SERVICE_SCHEMAS = ("gateway", "customers", "subscriptions", "orders", "payments")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC going in and coming out.

    SQLite stores no offset, so values come back naive; they were written as UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


Money = sa.BigInteger  # integer minor units; the currency sits in a column beside it


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


# A pooled connection idle for longer than this is checked before it is used, and replaced if
# the database closed it (a restart, a proxy's idle timeout). A busy process reuses its
# connections every few milliseconds: checking each checkout instead (pool_pre_ping) costs three
# round trips each time with asyncpg (BEGIN, a ping, ROLLBACK), a sixth of a payment's CPU. A
# connection lost while in use answers 503 (kit.http), and the pool replaces it.
IDLE_CHECK_SECONDS = 10.0


def make_engine(url: str, *, pool_size: int = 10, foreign_keys: bool = True) -> AsyncEngine:
    """An async engine for `url`, with service schemas translated away on SQLite.

    `foreign_keys=False` is for migrations: SQLite rebuilds a table to alter it, and dropping
    the old copy must not trip the keys that point at it.
    """
    if is_sqlite(url):
        engine = create_async_engine(
            url,
            connect_args={"timeout": 30},
            execution_options={"schema_translate_map": dict.fromkeys(SERVICE_SCHEMAS)},
        )

        @sa.event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets readers run beside the single writer; the busy timeout makes a second
            # writer wait for the first instead of failing at once.
            # Recur issues BEGIN itself (below); the driver must not open transactions.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @sa.event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Take the write lock at BEGIN, so two transactions never deadlock upgrading
            # from a read lock to a write lock.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size)
    dialect = engine.sync_engine.dialect

    @sa.event.listens_for(engine.sync_engine, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @sa.event.listens_for(engine.sync_engine, "checkout")
    def _check_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_CHECK_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool drops this connection and hands out another (a new one if need be).
            raise sa.exc.DisconnectionError(f"an idle connection was dead: {exc}") from exc

    return engine


def insert_ignoring_conflicts(conn: AsyncConnection, table: sa.Table) -> Any:
    """An INSERT that does nothing when the row's unique key exists already."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


def upsert(conn: AsyncConnection, table: sa.Table) -> Any:
    """An INSERT with `.on_conflict_do_update(...)` available on both databases."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


class Database:
    """The engine of one database, shared by the services that run in this process."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def dispose(self) -> None:
        await self.engine.dispose()


class UnitOfWork:
    """One transaction. It rolls back unless `commit()` is called.

    Events recorded in an outbox during the transaction are handed to the event bus only after
    the commit succeeds, so nothing is announced that did not happen.
    """

    def __init__(self, db: Database, bus: EventBus | None = None):
        self._db = db
        self._bus = bus
        self._conn: AsyncConnection | None = None
        self.pending_events: list[Event] = []
        self._after_commit: list[Callable[[], Awaitable[object]]] = []
        # Values cached from what this transaction changes are dropped after it commits.
        self.cache: Cache = bus.cache if bus is not None else DISABLED
        self._forget: list[str] = []

    @property
    def conn(self) -> AsyncConnection:
        if self._conn is None:
            raise RuntimeError("unit of work used outside `async with`")
        return self._conn

    async def __aenter__(self) -> UnitOfWork:
        self._conn = await self._db.engine.connect()
        await self._conn.begin()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is None:
            return  # committed: the connection went back to the pool then
        try:
            if self._conn.in_transaction():
                await self._conn.rollback()
        finally:
            await self._conn.close()
            self._conn = None

    def forget_cached(self, key: str) -> None:
        """Drop the cached value under `key` once this transaction has committed: before its
        events go out, so that no consumer of them, in any process, reads the value from before
        the change."""
        self._forget.append(key)

    def after_commit(self, job: Callable[[], Awaitable[object]]) -> None:
        """Run `job` once this transaction has committed (never if it rolls back).

        For an event consumer whose work calls other services: that must never happen while
        its transaction is open (on SQLite it would wait on its own write lock).
        """
        self._after_commit.append(job)

    async def commit(self) -> None:
        """Commit, give the connection back to the pool, drop the cached values it changed,
        then hand the events to the bus and run the after-commit jobs. The unit of work is
        done: nothing more may run in it.

        The connection goes back first because delivering the events takes connections of its
        own: a commit holding one while it waits for another would, under load, leave every
        connection of the pool held by commits waiting for one."""
        await self.conn.commit()
        await self.conn.close()
        self._conn = None
        forget, self._forget = self._forget, []
        for key in forget:
            await self.cache.delete(key)
        events, self.pending_events = self.pending_events, []
        if events and self._bus is not None:
            await self._bus.deliver(events)
        jobs, self._after_commit = self._after_commit, []
        for job in jobs:
            await job()

    async def execute(self, statement: Any, params: Any = None) -> sa.CursorResult[Any]:
        return await self.conn.execute(statement, params)

    async def insert_rows(self, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        """Insert many new rows. On PostgreSQL with COPY, which takes rows several times faster
        than INSERT (the bill run writes tens of thousands a second); elsewhere executemany.
        Every row must carry every column of `table`."""
        if not rows:
            return
        if self.conn.dialect.name != "postgresql":
            await self.execute(sa.insert(table), rows)
            return
        columns = [column.name for column in table.columns]
        encoders = [_copy_encoder(column) for column in table.columns]
        records = [
            tuple(
                value if encode is None or value is None else encode(value)
                for value, encode in zip((row[c] for c in columns), encoders, strict=True)
            )
            for row in rows
        ]
        raw = await self.conn.get_raw_connection()
        await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
            table.name, schema_name=table.schema, columns=columns, records=records
        )

    async def fetch_one(self, statement: Any) -> sa.Row[Any] | None:
        return (await self.conn.execute(statement)).first()

    async def fetch_all(self, statement: Any) -> Sequence[sa.Row[Any]]:
        return (await self.conn.execute(statement)).all()


def _copy_encoder(column: sa.Column[Any]) -> Callable[[Any], Any] | None:
    """How COPY wants a column's value: JSON as its text; timestamps checked aware, as
    UTCDateTime does for INSERT."""
    if isinstance(column.type, sa.JSON):
        return _json_text
    if isinstance(column.type, UTCDateTime):
        return _aware_utc
    return None


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the database")
    return value


async def fetch_by_ids(
    uow: UnitOfWork,
    table: sa.Table,
    tenant_id: str,
    ids: Iterable[str],
    *where: sa.ColumnElement[bool],
    for_update: bool = False,
) -> list[sa.Row[Any]]:
    """The tenant's rows with these ids (and `where`), locked in id order with `for_update`.

    Looked up by primary key alone, and the tenant's rows kept here: with the tenant in the
    WHERE clause, PostgreSQL picks the tenant's index as soon as its statistics lag behind a
    table that grows by thousands of rows a second (the bill run's), and reads every row of the
    tenant for each batch. By key alone, the plan is a probe per id whatever the statistics.
    """
    wanted = sorted(set(ids))
    if not wanted:
        return []
    key = table.c.id
    stmt = sa.select(table).where(key.in_(wanted), *where).order_by(key)
    if for_update:
        stmt = stmt.with_for_update()
    rows = await uow.fetch_all(stmt)
    return [row for row in rows if row.tenant_id == tenant_id]


def counters_table(metadata: sa.MetaData, service: str) -> sa.Table:
    """Per-tenant gapless counters (customer numbers, order numbers) of one service."""
    return sa.Table(
        f"{service}_counters",
        metadata,
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )


async def next_number(uow: UnitOfWork, table: sa.Table, tenant_id: str, name: str) -> int:
    """The next number of a gapless per-tenant sequence.

    The counter row stays locked until the transaction ends, and a rollback takes the number
    back, so numbers have no gaps: what invoices and customer numbers need.
    """
    return (await next_numbers(uow, table, tenant_id, name, 1))[0]


async def next_numbers(
    uow: UnitOfWork, table: sa.Table, tenant_id: str, name: str, count: int
) -> range:
    """The next `count` numbers of a gapless per-tenant sequence, taken at once."""
    stmt = upsert(uow.conn, table).values(tenant_id=tenant_id, name=name, value=count)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.tenant_id, table.c.name], set_={"value": table.c.value + count}
    ).returning(table.c.value)
    last = int((await uow.execute(stmt)).scalar_one())
    return range(last - count + 1, last + 1)


async def claim_leased(
    uow: UnitOfWork,
    table: sa.Table,
    *,
    key: sa.Column[Any],
    where: Sequence[sa.ColumnElement[bool]],
    order_by: sa.ColumnElement[Any],
    limit: int,
    lease_until: datetime,
) -> Sequence[sa.Row[Any]]:
    """Claim up to `limit` due rows for this worker: rows another worker holds are skipped
    (SKIP LOCKED), and the claimed ones are leased (`claimed_until`) so that no other worker
    takes them after this transaction ends, until the lease runs out. `where` must leave out
    rows whose lease still runs."""
    stmt = sa.select(table).where(*where).order_by(order_by).limit(limit)
    claimed = await uow.fetch_all(stmt.with_for_update(skip_locked=True))
    if claimed:
        await uow.execute(
            sa.update(table)
            .where(key.in_([row._mapping[key.name] for row in claimed]))
            .values(claimed_until=lease_until)
        )
    return claimed
