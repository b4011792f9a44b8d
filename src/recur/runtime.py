"""The composition root: one process's database, event bus, clock and service clients."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import timedelta

from recur.customers import events as customer_events
from recur.customers import http as customers_http
from recur.customers import service as customer_service
from recur.customers.client import CustomersClient
from recur.customers.http import HttpCustomersClient
from recur.customers.local import LocalCustomersClient
from recur.kit.cache import Cache
from recur.kit.clock import Clock, SystemClock
from recur.kit.db import Database, UnitOfWork
from recur.kit.events import EventBus
from recur.kit.service_client import ServiceClient, ServiceSession
from recur.kit.streams import StreamTransport
from recur.orders import events as order_events
from recur.orders import http as orders_http
from recur.orders import service as order_service
from recur.orders.client import OrdersClient
from recur.orders.http import HttpOrdersClient
from recur.orders.local import LocalOrdersClient
from recur.payments import events as payment_events
from recur.payments import http as payments_http
from recur.payments import service as payment_service
from recur.payments.client import PaymentsClient
from recur.payments.http import HttpPaymentsClient
from recur.payments.local import LocalPaymentsClient
from recur.settings import SERVICE_NAMES, Settings
from recur.subscriptions import events as subscription_events
from recur.subscriptions import http as subscriptions_http
from recur.subscriptions import service as subscription_service
from recur.subscriptions.client import SubscriptionsClient
from recur.subscriptions.http import HttpSubscriptionsClient
from recur.subscriptions.local import LocalSubscriptionsClient

# The calls of each service's HTTP client that may go to a second instance after the first
# got them and gave no answer (see kit.service_client).
IDEMPOTENT_CALLS = {
    "customers": customers_http.IDEMPOTENT_CALLS,
    "subscriptions": subscriptions_http.IDEMPOTENT_CALLS,
    "orders": orders_http.IDEMPOTENT_CALLS,
    "payments": payments_http.IDEMPOTENT_CALLS,
}


@dataclass
class Runtime:
    settings: Settings
    db: Database
    clock: Clock
    bus: EventBus
    customers: CustomersClient = field(init=False)
    subscriptions: SubscriptionsClient = field(init=False)
    orders: OrdersClient = field(init=False)
    payments: PaymentsClient = field(init=False)
    # The one HTTP session to the services this process reaches over HTTP (distributed mode).
    upstream: ServiceSession | None = None

    @property
    def cache(self) -> Cache:
        """Customer and plan reads, in Redis when `redis_url` is set; disabled otherwise."""
        return self.bus.cache

    def uow(self) -> UnitOfWork:
        """A new transaction; its events reach the bus after it commits."""
        return UnitOfWork(self.db, self.bus)

    async def close(self) -> None:
        if self.upstream is not None:
            await self.upstream.close()
        await self.bus.cache.close()
        if self.bus.transport is not None:
            await self.bus.transport.close()
        await self.db.dispose()


def uses_streams(settings: Settings) -> bool:
    """Whether events travel through Redis Streams (see `Settings.event_transport`)."""
    if settings.event_transport == "streams":
        if not settings.redis_url:
            raise ValueError("RECUR_EVENT_TRANSPORT=streams needs RECUR_REDIS_URL")
        return True
    if settings.event_transport == "inprocess":
        return False
    return bool(settings.redis_url and settings.service_urls)


def build_runtime(
    settings: Settings, clock: Clock | None = None, *, local_services: Collection[str] = ()
) -> Runtime:
    """One process's runtime. Embedded (the default): all four services in this process, on
    one database. Distributed: the services named in `settings.service_urls` are reached over
    HTTP, except those in `local_services` (the one this process serves), which run here."""
    clock = clock or SystemClock()
    db = Database(settings.database_url)
    bus = EventBus(db, clock, cache=Cache.from_url(settings.redis_url))
    rt = Runtime(settings=settings, db=db, clock=clock, bus=bus)
    remote = {n: url for n, url in settings.service_urls.items() if n not in local_services}
    if remote:
        rt.upstream = ServiceSession(settings.service_timeout_seconds)

    def upstream(name: str) -> ServiceClient:
        assert rt.upstream is not None
        return ServiceClient(
            name, remote[name], rt.upstream, settings.internal_token, IDEMPOTENT_CALLS[name]
        )

    rt.customers = (
        HttpCustomersClient(upstream("customers"), bus.cache)
        if "customers" in remote
        else LocalCustomersClient(rt)
    )
    rt.subscriptions = (
        HttpSubscriptionsClient(upstream("subscriptions"))
        if "subscriptions" in remote
        else LocalSubscriptionsClient(rt)
    )
    rt.orders = (
        HttpOrdersClient(upstream("orders")) if "orders" in remote else LocalOrdersClient(rt)
    )
    rt.payments = (
        HttpPaymentsClient(upstream("payments"))
        if "payments" in remote
        else LocalPaymentsClient(rt)
    )
    local = frozenset(n for n in SERVICE_NAMES if n not in remote)
    bus.local_services = local
    if uses_streams(settings):
        bus.transport = StreamTransport.from_url(
            settings.redis_url or "",
            groups=SERVICE_NAMES,
            services=SERVICE_NAMES,
            claim_idle_ms=int(settings.event_claim_idle_seconds * 1000),
            prefix=settings.event_stream_prefix,
        )
        bus.replay_window = timedelta(seconds=settings.event_replay_window_seconds)
    for outbox in (
        customer_service.OUTBOX,
        subscription_service.OUTBOX,
        order_service.OUTBOX,
        payment_service.OUTBOX,
    ):
        bus.add_outbox(outbox)
    customer_events.subscribe(bus)
    subscription_events.subscribe(bus, rt)
    order_events.subscribe(bus, rt)
    payment_events.subscribe(bus, rt)
    return rt
