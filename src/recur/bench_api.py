"""`recur bench api`: the public API under load, through the gateway and straight to the services.

A topology from `recur cluster up` (its own, or a running one given with `--cluster`) gets a
new tenant with an API key, a plan, and customers each with a sandbox card and a subscription,
all made through the gateway as a user would. Then wrk (C, far lighter than a load generator in
Python on a small machine) drives, after a warm-up:

1. the steady mix (GET /v1/customers/{id}, GET /v1/subscriptions/{id}, POST /v1/payments with
   its own Idempotency-Key) through the gateways, then the same mix straight to the services'
   instances;
2. POST /v1/payments alone through the gateways.

How the direct run serves the same requests: wrk drives one host per thread at most, so each
wrk thread is given one kind of request and its own address (`thread.addr` in the generated
script). Through the gateway a thread's address is a gateway; straight, it is an instance of
the service owning that kind. Both runs have the same threads, the same connections per
thread and the same kinds per thread, so they send the same requests; only the hop differs.
A closed loop sets each kind's share of the requests by its latency, so the shares are
measured and printed, beside the connection split that is chosen here.

Everything a run measures comes from wrk (`bench_wrk`), and the CPU time each process of the
topology spent meanwhile. A response that is not a 2xx, a socket error, or a request left
unanswered past the timeout fails the bench, once what was measured is printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from recur.bench_wrk import (
    CURRENCY,
    KIND_SERVICE,
    BenchError,
    RunResult,
    Seeded,
    Topology,
    failure,
    run_wrk,
    wrk_path,
)
from recur.cluster import ClusterError, down, read_state, up
from recur.gateway.keys import create_key
from recur.kit.clock import SystemClock
from recur.kit.db import Database
from recur.kit.ids import new_id
from recur.settings import SERVICE_NAMES, Settings

# The kind of request each wrk thread sends. Eight threads in a 3:3:2 split: reads of customers
# and of subscriptions on three eighths of the connections each, payments on a quarter.
MIX_THREADS = (
    "customer",
    "subscription",
    "payment",
    "customer",
    "subscription",
    "payment",
    "customer",
    "subscription",
)
PAYMENT_THREADS = ("payment",) * len(MIX_THREADS)
KIND_REQUEST = {
    "customer": "GET /v1/customers/{id}",
    "subscription": "GET /v1/subscriptions/{id}",
    "payment": "POST /v1/payments (own Idempotency-Key)",
}

PLAN_AMOUNT = 1999
SANDBOX_CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2099}
SEED_CONCURRENCY = 16
# Above the bench's rate, so the buckets never refuse it; each request still spends a token.
RATE_LIMIT = 1_000_000

# What the issue asks of the topology on a 2-core machine.
TARGET_RATIO = 0.60
TARGET_P99_MS = 30.0
TARGET_PAYMENTS_PER_SECOND = 1000.0
TARGET_CONNECTIONS = 64


@dataclass(frozen=True)
class Target:
    name: str
    wanted: str
    measured: str
    met: bool


@dataclass
class Report:
    tenant_id: str
    tenant_name: str
    gateways: list[str]
    instances: dict[str, list[str]]
    connections: int
    duration_seconds: float
    mix_threads: list[str]
    runs: list[RunResult] = field(default_factory=list)
    warmups: list[RunResult] = field(default_factory=list)
    payments_sent: int = 0  # POST /v1/payments sent in every run, warm-ups included
    failure: str | None = None  # the run that had errors, which ended the bench

    def run(self, name: str) -> RunResult | None:
        return next((run for run in self.runs if run.name == name), None)

    @property
    def ratio(self) -> float | None:
        through, direct = self.run("mix-gateway"), self.run("mix-direct")
        if through is None or direct is None or not direct.requests_per_second:
            return None
        return through.requests_per_second / direct.requests_per_second

    def targets(self) -> list[Target]:
        """Each target whose runs were measured; one with errors in its runs is not met."""
        mix, direct, payments = (
            self.run(name) for name in ("mix-gateway", "mix-direct", "payments-gateway")
        )
        at = "" if self.connections == TARGET_CONNECTIONS else f" (at {self.connections})"
        targets = []
        if mix is not None and direct is not None and self.ratio is not None:
            targets.append(
                Target(
                    "gateway/direct throughput (mix)",
                    f">= {TARGET_RATIO:.0%}",
                    f"{self.ratio:.0%}",
                    self.ratio >= TARGET_RATIO and not (mix.errors or direct.errors),
                )
            )
        if mix is not None:
            targets.append(
                Target(
                    f"p99 through the gateway (mix) at {TARGET_CONNECTIONS} connections",
                    f"< {TARGET_P99_MS:g} ms",
                    f"{mix.p99_ms:.1f} ms{at}",
                    mix.p99_ms < TARGET_P99_MS
                    and self.connections >= TARGET_CONNECTIONS
                    and not mix.errors,
                )
            )
        if payments is not None:
            targets.append(
                Target(
                    "POST /v1/payments alone through the gateway",
                    f">= {TARGET_PAYMENTS_PER_SECOND:,.0f}/s",
                    f"{payments.requests_per_second:,.0f}/s",
                    payments.requests_per_second >= TARGET_PAYMENTS_PER_SECOND
                    and not payments.errors,
                )
            )
        return targets

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["ratio"] = self.ratio
        document["targets"] = [asdict(target) for target in self.targets()]
        return document


def topology_from_state(state_dir: Path) -> Topology:
    """The gateways and instances of the cluster that `recur cluster up` left in `state_dir`."""
    state = read_state(state_dir)
    if state is None or state.get("status") != "up":
        raise BenchError(f"no cluster is up in {state_dir}: run `recur cluster up` first")
    gateways = state.get("gateways")
    processes = state.get("processes")
    assert isinstance(gateways, list) and isinstance(processes, list)
    instances: dict[str, list[str]] = {}
    pids: dict[str, list[int]] = {}
    for process in processes:
        if process.get("role") in KIND_SERVICE.values() and process.get("url"):
            instances.setdefault(process["role"], []).append(process["url"])
        if process.get("role") in ("gateway", *SERVICE_NAMES):
            pids.setdefault(process["role"], []).append(int(process["pid"]))
    missing = sorted(set(KIND_SERVICE.values()) - set(instances))
    if not gateways or missing:
        raise BenchError(f"the cluster in {state_dir} has no gateway or no {missing}")
    return Topology([str(url) for url in gateways], instances, pids)


# --- seeding, through the gateway --------------------------------------------------------------


async def _call(
    http: aiohttp.ClientSession, method: str, url: str, body: dict[str, Any]
) -> dict[str, Any]:
    async with http.request(method, url, json=body) as response:
        text = await response.text()
        if response.status // 100 != 2:
            raise BenchError(f"seeding: {method} {url} answered {response.status}: {text[:500]}")
        answer: dict[str, Any] = json.loads(text)
        return answer


async def seed(settings: Settings, gateway: str, customers: int) -> Seeded:
    """A new tenant and key in the configured database; through `gateway`, a product and a
    monthly plan, and `customers` customers, each with a sandbox card as its default payment
    method and a subscription to the plan."""
    db = Database(settings.database_url)
    try:
        issued = await create_key(db, SystemClock(), f"bench api {new_id('t')}")
    finally:
        await db.dispose()
    headers = {"Authorization": f"Bearer {issued.secret}"}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:
        product = await _call(http, "POST", f"{gateway}/v1/products", {"name": "Bench"})
        plan = await _call(
            http,
            "POST",
            f"{gateway}/v1/plans",
            {
                "product_id": product["id"],
                "currency": CURRENCY,
                "amount": PLAN_AMOUNT,
                "interval": "month",
            },
        )
        slots = asyncio.Semaphore(SEED_CONCURRENCY)

        async def one(number: int) -> tuple[str, str]:
            async with slots:
                customer = await _call(
                    http,
                    "POST",
                    f"{gateway}/v1/customers",
                    {
                        "name": f"Bench {number}",
                        "email": f"bench{number}@example.com",
                        "currency": CURRENCY,
                    },
                )
                await _call(
                    http,
                    "POST",
                    f"{gateway}/v1/customers/{customer['id']}/payment-methods",
                    {"card": SANDBOX_CARD, "set_default": True},
                )
                subscription = await _call(
                    http,
                    "POST",
                    f"{gateway}/v1/subscriptions",
                    {"customer_id": customer["id"], "plan_id": plan["id"]},
                )
                return customer["id"], subscription["id"]

        made = await asyncio.gather(*(one(n) for n in range(1, customers + 1)))
    return Seeded(
        issued.tenant_id,
        issued.tenant_name,
        issued.secret,
        [customer for customer, _ in made],
        [subscription for _, subscription in made],
    )


# --- the whole bench -----------------------------------------------------------------------------


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """`values` in os.environ for the processes started meanwhile (cluster up passes its own
    environment down), restored after."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _own_cluster(settings: Settings, say: Callable[[str], None]) -> Iterator[Topology]:
    """A cluster of one instance per service, in a temporary state directory, stopped after.
    Its rate limit is raised above the bench's rate: the buckets are still spent (one Redis
    script per request when RECUR_REDIS_URL is set), but never refuse."""
    state_dir = Path(tempfile.mkdtemp(prefix="recur-bench-api-"))
    limits = {
        "RECUR_RATE_LIMIT_PER_SECOND": str(RATE_LIMIT),
        "RECUR_RATE_LIMIT_BURST": str(RATE_LIMIT),
    }
    try:
        with _environment(limits):
            up(settings, 1, state_dir, echo=say)
    except ClusterError as error:
        raise BenchError(f"cluster up failed (logs in {state_dir}): {error}") from error
    stopped = False
    try:
        yield topology_from_state(state_dir)
        down(state_dir, grace_seconds=10.0, echo=say)
        stopped = True
    finally:
        if not stopped:
            with contextlib.suppress(ClusterError):
                down(state_dir, grace_seconds=10.0, echo=say)
            say(f"the cluster's logs are in {state_dir}")
    shutil.rmtree(state_dir, ignore_errors=True)


def bench_api(
    settings: Settings,
    *,
    cluster: Path | None,
    connections: int,
    seconds: float,
    warmup_seconds: float,
    customers: int,
    say: Callable[[str], None],
) -> Report:
    """Seed, warm up, then measure the mix through the gateway and straight to the services,
    and payments alone through the gateway. BenchError on any error response."""
    wrk = wrk_path()
    if connections % len(MIX_THREADS):
        raise BenchError(f"--connections must be a multiple of {len(MIX_THREADS)} (wrk threads)")
    with contextlib.ExitStack() as stack:
        if cluster is None:
            say("starting a cluster: 1 instance per service, 2 gateways")
            topology = stack.enter_context(_own_cluster(settings, say))
        else:
            topology = topology_from_state(cluster)
        started = time.perf_counter()
        seeded = asyncio.run(seed(settings, topology.gateways[0], customers))
        say(
            f"seeded tenant {seeded.tenant_id}: {customers} customers with a card and a "
            f"subscription, in {time.perf_counter() - started:.1f} s"
        )
        report = Report(
            tenant_id=seeded.tenant_id,
            tenant_name=seeded.tenant_name,
            gateways=topology.gateways,
            instances=topology.instances,
            connections=connections,
            duration_seconds=seconds,
            mix_threads=list(MIX_THREADS),
        )
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="recur-wrk-")))

        def measure(
            into: list[RunResult], name: str, via: str, kinds: tuple[str, ...], length: float
        ) -> None:
            say(f"{name}: {length:g} s at {connections} connections")
            result = run_wrk(wrk, name, via, kinds, topology, seeded, connections, length, work_dir)
            into.append(result)
            report.payments_sent += result.kinds["payment"].sent if "payment" in result.kinds else 0
            report.failure = failure(result)
            if report.failure:
                raise BenchError(report.failure, report)

        if warmup_seconds > 0:
            for via in ("gateway", "direct"):
                measure(report.warmups, f"warm-up-{via}", via, MIX_THREADS, warmup_seconds)
        measure(report.runs, "mix-gateway", "gateway", MIX_THREADS, seconds)
        measure(report.runs, "mix-direct", "direct", MIX_THREADS, seconds)
        measure(report.runs, "payments-gateway", "gateway", PAYMENT_THREADS, seconds)
    return report


def describe(report: Report) -> list[str]:
    """The report for people: each run, the ratio, and each target met or not."""
    lines = [
        f"gateways {', '.join(report.gateways)}; instances "
        + "; ".join(f"{name} {', '.join(urls)}" for name, urls in report.instances.items()),
        f"mix: {len(report.mix_threads)} wrk threads, "
        + ", ".join(
            f"{KIND_REQUEST[kind]} on {report.mix_threads.count(kind)}/{len(report.mix_threads)}"
            for kind in KIND_REQUEST
        )
        + " of the connections",
        f"{'run':<18} {'requests/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'non-2xx':>7} {'stuck':>5} {'sock err':>8}  share of requests",
    ]
    for run in [*report.warmups, *report.runs] if report.failure else report.runs:
        shares = (
            ", ".join(f"{kind} {count.ok / run.requests:.0%}" for kind, count in run.kinds.items())
            if run.requests
            else ""
        )
        lines.append(
            f"{run.name:<18} {run.requests_per_second:>10,.0f} {run.p50_ms:>7.1f} "
            f"{run.p99_ms:>7.1f} {run.max_ms:>7.1f} {run.non_2xx:>7} {run.stuck:>5} "
            f"{sum(run.socket_errors.values()):>8}  {shares}"
        )
    for run in report.runs:
        if run.cpu_ms_per_request:
            lines.append(
                f"CPU per request, {run.name}: "
                + ", ".join(f"{role} {ms:.2f} ms" for role, ms in run.cpu_ms_per_request.items())
            )
    if report.ratio is not None:
        lines.append(f"gateway/direct throughput (mix): {report.ratio:.0%}")
    for target in report.targets():
        verdict = "met" if target.met else "NOT MET"
        lines.append(
            f"target {target.name}: {target.wanted}, measured {target.measured}: {verdict}"
        )
    return lines
