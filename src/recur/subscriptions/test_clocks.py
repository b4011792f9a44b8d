"""Test clocks: move time for a set of customers and carry out what falls due on the way."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from recur.kit.clock import ensure_utc
from recur.kit.errors import Conflict, InvalidRequest, NotFound
from recur.kit.ids import new_id
from recur.kit.pagination import Page, to_page
from recur.subscriptions import billing
from recur.subscriptions import repository as repo
from recur.subscriptions.schemas import TestClock
from recur.subscriptions.tables import test_clocks

if TYPE_CHECKING:
    from recur.runtime import Runtime


async def create_test_clock(
    rt: Runtime, tenant_id: str, frozen_time: datetime, name: str | None
) -> TestClock:
    """A clock frozen at `frozen_time`; customers created on it live in its time."""
    async with rt.uow() as uow:
        clock_id = new_id("clock")
        await repo.insert(
            uow,
            test_clocks,
            {
                "id": clock_id,
                "tenant_id": tenant_id,
                "name": name,
                "frozen_time": ensure_utc(frozen_time),
                "status": "ready",
                "created": rt.clock.now(),
            },
        )
        clock = repo.to_test_clock(await repo.get_test_clock(uow, tenant_id, clock_id))
        await uow.commit()
    return clock


async def get_test_clock(rt: Runtime, tenant_id: str, clock_id: str) -> TestClock:
    """One test clock of the tenant."""
    async with rt.uow() as uow:
        row = await repo.get_test_clock(uow, tenant_id, clock_id)
    if row is None:
        raise NotFound(f"no such test clock: {clock_id}", param="test_clock_id")
    return repo.to_test_clock(row)


async def list_test_clocks(
    rt: Runtime, tenant_id: str, limit: int, starting_after: str | None
) -> Page[TestClock]:
    async with rt.uow() as uow:
        rows, has_more = await repo.page(uow, test_clocks, tenant_id, limit, starting_after)
    return to_page(rows, has_more, repo.to_test_clock)


async def advance_test_clock(
    rt: Runtime, tenant_id: str, clock_id: str, frozen_time: datetime
) -> TestClock:
    """Move the clock forward and carry out everything due up to the new time, in time order:
    trial ends, renewals (one per period crossed), period-end cancellations and payment
    retries. `ready` when done."""
    frozen_time = ensure_utc(frozen_time)
    async with rt.uow() as uow:
        row = await repo.get_test_clock(uow, tenant_id, clock_id)
        if row is None:
            raise NotFound(f"no such test clock: {clock_id}", param="test_clock_id")
        if row.status != "ready":
            raise Conflict("the test clock is advancing already")
        if frozen_time <= row.frozen_time:
            raise InvalidRequest(
                "frozen_time must be later than the clock's current time", param="frozen_time"
            )
        await repo.update(uow, test_clocks, tenant_id, clock_id, {"status": "advancing"})
        await uow.commit()
    current, stalled_at = row.frozen_time, None
    try:
        # One due time after another, the clock showing each: what one step does (a renewal
        # that fails, a subscription canceled after its last retry) decides what the next
        # one finds, as it would have in real time.
        while (due := await _next_due(rt, tenant_id, clock_id, frozen_time)) is not None:
            if due == stalled_at:
                break  # in another worker's hands right now; the next advance sees it
            current = max(due, current)
            await _set_time(rt, tenant_id, clock_id, current)
            # Retries first: a retry and a renewal due at once are the old period's last word
            # before the new one starts (a subscription canceled now is not renewed now).
            retries = await rt.payments.run_due_retries(tenant_id, current, clock_id)
            renewals = await billing.run(rt, test_clock_id=clock_id, now=current)
            stalled_at = due if retries.processed == renewals.processed == 0 else None
        await _set_time(rt, tenant_id, clock_id, frozen_time)
    finally:
        async with rt.uow() as uow:
            await repo.update(uow, test_clocks, tenant_id, clock_id, {"status": "ready"})
            await uow.commit()
    return await get_test_clock(rt, tenant_id, clock_id)


async def _next_due(rt: Runtime, tenant_id: str, clock_id: str, until: datetime) -> datetime | None:
    """The earliest time by `until` at which something on the clock is due."""
    async with rt.uow() as uow:
        action = await repo.next_due_on_clock(
            uow, tenant_id, clock_id, until=until, wall_now=rt.clock.now()
        )
    retry = await rt.payments.next_retry_due(tenant_id, clock_id, until)
    return min((t for t in (action, retry) if t is not None), default=None)


async def _set_time(rt: Runtime, tenant_id: str, clock_id: str, frozen_time: datetime) -> None:
    async with rt.uow() as uow:
        await repo.update(uow, test_clocks, tenant_id, clock_id, {"frozen_time": frozen_time})
        await uow.commit()


async def clock_now(rt: Runtime, tenant_id: str, test_clock_id: str | None) -> datetime:
    """The time a subscription lives in: its test clock's, or the real one."""
    if test_clock_id is None:
        return rt.clock.now()
    return (await get_test_clock(rt, tenant_id, test_clock_id)).frozen_time
