"""`recur bill-run` as an operator runs it: killed halfway and run again, or run twice at once,
it renews every subscription exactly once, and `recur verify` finds the books in order."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from recur.bench import seed
from recur.kit.db import SERVICE_SCHEMAS, Database, UnitOfWork
from recur.orders.tables import orders
from recur.payments.gateways.sandbox import SandboxGateway
from recur.payments.tables import payments
from recur.runtime import build_runtime
from recur.schema import all_tables
from recur.subscriptions import billing
from recur.subscriptions.billing import LEASE
from recur.subscriptions.tables import subscriptions

COUNT = 600
BATCH = 50
RECUR = str(Path(sys.executable).with_name("recur"))


def _seed(settings, count: int = COUNT) -> str:
    async def run() -> str:
        rt = build_runtime(settings)
        try:
            return (await seed(rt, count, rt.clock.now())).tenant_id
        finally:
            await rt.close()

    return asyncio.run(run())


def _recur(url: str, *args: str, new_session: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [RECUR, *args],
        env={**os.environ, "RECUR_DATABASE_URL": url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=new_session,
    )


def _finish(process: subprocess.Popen[str]) -> str:
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    return output


async def _kill_mid_batch(url: str, tenant_id: str, process: subprocess.Popen[str]) -> None:
    """SIGKILL the bill run (its whole process group) once some renewal orders exist but not
    all, and some subscriptions are between the first and the last step of their batch.

    The state is read again with the run's writes held back (on SQLite by the write lock every
    transaction takes; on PostgreSQL by a share lock on the tables it writes) and the run is
    killed before they are let go, so it dies in the state seen. Not while a payment is
    pending at the gateway: the test below dies exactly there. Until then the state is only
    looked at, holding nothing back: SQLite would seldom hand its write lock to a poller."""
    db = Database(url)
    sqlite = (
        sa.create_engine(
            sa.make_url(url).set(drivername="sqlite"),
            execution_options={"schema_translate_map": dict.fromkeys(SERVICE_SCHEMAS)},
        )
        if db.dialect == "sqlite"
        else None
    )

    async def look() -> sa.Row[tuple[int, int, int]]:
        if sqlite is not None:  # outside a transaction: never waits for the writer
            with sqlite.connect() as conn:
                return conn.execute(_progress(tenant_id)).one()
        async with UnitOfWork(db) as uow:
            return (await uow.execute(_progress(tenant_id))).one()

    try:
        while process.poll() is None:
            if _mid_batch(*await look()):
                async with UnitOfWork(db) as uow:
                    if db.dialect == "postgresql":
                        names = ", ".join(t.fullname for t in (subscriptions, orders, payments))
                        await uow.execute(sa.text(f"LOCK TABLE {names} IN SHARE MODE"))
                    if _mid_batch(*(await uow.execute(_progress(tenant_id))).one()):
                        os.killpg(process.pid, signal.SIGKILL)
                        process.communicate()
                        return
            await asyncio.sleep(0.002)
    finally:
        await db.dispose()
        if sqlite is not None:
            sqlite.dispose()
    raise AssertionError("the bill run ended before it could be killed")


def _mid_batch(ordered: int, in_batch: int, charging: int) -> bool:
    return 0 < ordered < COUNT and in_batch > 0 and charging == 0


def _progress(tenant_id: str) -> sa.Select[tuple[int, int, int]]:
    """Renewal orders made, subscriptions in a batch, payments pending at the gateway."""

    def count(table: sa.Table, *where: sa.ColumnElement[bool]) -> sa.ScalarSelect[int]:
        return (
            sa.select(sa.func.count())
            .where(table.c.tenant_id == tenant_id, *where)
            .scalar_subquery()
        )

    return sa.select(
        count(orders),
        count(subscriptions, subscriptions.c.pending_period_start.is_not(None)),
        count(payments, payments.c.status == "pending"),
    )


async def _a_minute_later(url: str) -> None:
    """What a minute of waiting does: the dead run's leases run out, the events it left
    undelivered are old enough for the next run to deliver, and the charges it left pending
    are old enough to be asked of the gateway again."""
    a_minute_ago = datetime.now(UTC) - LEASE
    db = Database(url)
    try:
        async with UnitOfWork(db) as uow:
            await uow.execute(
                sa.update(subscriptions)
                .where(subscriptions.c.claimed_until.is_not(None))
                .values(claimed_until=a_minute_ago)
            )
            await uow.execute(
                sa.update(payments)
                .where(payments.c.status == "pending")
                .values(updated=a_minute_ago)
            )
            for outbox in (t for t in all_tables() if t.name.endswith("_outbox")):
                await uow.execute(
                    sa.update(outbox)
                    .where(outbox.c.delivered_at.is_(None))
                    .values(created=a_minute_ago)
                )
            await uow.commit()
    finally:
        await db.dispose()


async def _assert_renewed_once(url: str, tenant_id: str, count: int = COUNT) -> None:
    """Every subscription has one order for its new period, paid by one succeeded payment,
    and is active in that period."""
    db = Database(url)
    try:
        async with UnitOfWork(db) as uow:
            subs = await uow.fetch_all(
                sa.select(subscriptions).where(subscriptions.c.tenant_id == tenant_id)
            )
            made = await uow.fetch_all(sa.select(orders).where(orders.c.tenant_id == tenant_id))
            paid = await uow.fetch_all(
                sa.select(payments.c.order_id, payments.c.status).where(
                    payments.c.tenant_id == tenant_id
                )
            )
    finally:
        await db.dispose()
    assert len(subs) == count
    per_subscription = Counter(order.subscription_id for order in made)
    assert per_subscription == Counter({sub.id: 1 for sub in subs})
    by_subscription = {order.subscription_id: order for order in made}
    statuses: dict[str, list[str]] = {order.id: [] for order in made}
    for payment in paid:
        statuses[payment.order_id].append(payment.status)
    assert all(found == ["succeeded"] for found in statuses.values()), Counter(
        tuple(found) for found in statuses.values()
    )
    now = datetime.now(UTC)
    for sub in subs:
        order = by_subscription[sub.id]
        assert order.status == "paid"
        assert order.period_start == sub.current_period_start
        assert (sub.status, sub.period_index, sub.latest_order_id) == ("active", 1, order.id)
        assert sub.pending_period_start is None and sub.claimed_until is None
        assert sub.current_period_start <= now < sub.current_period_end == sub.next_action_at


def _renewed(output: str) -> int:
    return int(output.split("renewed ")[1].split(",")[0])


def _verify(url: str) -> None:
    _finish(_recur(url, "verify"))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_bill_run_killed_mid_batch_is_finished_by_the_next(settings, workers) -> None:
    url = settings.database_url
    tenant_id = _seed(settings)
    # Its own process group, so that the workers die with the command, as under a supervisor.
    killed = _recur(
        url, "bill-run", "--batch-size", str(BATCH), "--workers", str(workers), new_session=True
    )
    try:
        asyncio.run(_kill_mid_batch(url, tenant_id, killed))
    finally:
        if killed.poll() is None:
            os.killpg(killed.pid, signal.SIGKILL)
            killed.communicate()
    assert killed.returncode == -signal.SIGKILL

    asyncio.run(_a_minute_later(url))
    output = _finish(_recur(url, "bill-run"))
    assert _renewed(output) > 0 and "errors 0" in output, output
    _verify(url)
    asyncio.run(_assert_renewed_once(url, tenant_id))


def test_two_bill_runs_at_once_share_the_work(settings) -> None:
    url = settings.database_url
    tenant_id = _seed(settings)
    runs = [_recur(url, "bill-run", "--batch-size", str(BATCH), "--workers", "2") for _ in "ab"]
    outputs = [_finish(run) for run in runs]
    assert sum(_renewed(output) for output in outputs) == COUNT, outputs
    _verify(url)
    asyncio.run(_assert_renewed_once(url, tenant_id))


class _Died(BaseException):
    """The process dying: nothing after it runs (no `except Exception` catches it)."""


def test_a_bill_run_killed_while_charging_is_finished_by_the_next(settings, monkeypatch) -> None:
    url = settings.database_url
    tenant_id = _seed(settings, BATCH)

    async def charge(*_args: object, **_kwargs: object) -> None:
        raise _Died

    async def die_charging() -> None:
        rt = build_runtime(settings)
        try:
            with pytest.raises(_Died):
                await billing.run(rt, batch_size=BATCH)
        finally:
            await rt.close()

    with monkeypatch.context() as patch:
        patch.setattr(SandboxGateway, "charge", charge)
        asyncio.run(die_charging())  # the payments are written pending, none has an answer

    asyncio.run(_a_minute_later(url))
    _finish(_recur(url, "bill-run"))
    _verify(url)
    asyncio.run(_assert_renewed_once(url, tenant_id, BATCH))
