"""The `recur` command: serve the API, migrate, issue keys, run the bill run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from recur.kit.logs import configure_logging
from recur.settings import Settings

if TYPE_CHECKING:
    from recur.subscriptions.billing import BillRunResult

app = typer.Typer(help="Recur: open-source subscription billing.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys and tenants.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
bench_app = typer.Typer(help="Benchmarks, on the configured database.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
cluster_app = typer.Typer(
    help="A whole distributed topology on loopback (PostgreSQL), for a demo and for tests.",
    no_args_is_help=True,
)
app.add_typer(cluster_app, name="cluster")
payments_app = typer.Typer(
    help="Payments: settle what the gateways left unknown.", no_args_is_help=True
)
app.add_typer(payments_app, name="payments")
console = Console()


def _settings() -> Settings:
    return Settings()


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema to the latest version."""
    from recur.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    console.print(f"database at {_redact(settings.database_url)} is up to date")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Default RECUR_HOST or 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="Default RECUR_PORT or 8000")] = None,
    service: Annotated[
        str | None,
        typer.Option(
            help="Serve only this service (customers, subscriptions, orders or payments), "
            "reaching the others at RECUR_SERVICE_URLS"
        ),
    ] = None,
) -> None:
    """Serve the whole API (gateway and all four services) in this process, or with
    --service one service as its own process (distributed mode)."""
    import uvicorn
    from fastapi import FastAPI

    from recur.app import create_app
    from recur.runtime import build_runtime
    from recur.settings import SERVICE_NAMES

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    application: FastAPI
    if service is None:
        application = create_app(build_runtime(settings))
    else:
        from recur.service_app import create_service_app

        if service not in SERVICE_NAMES:
            raise typer.BadParameter(
                f"{service!r} is not a service: one of {', '.join(SERVICE_NAMES)}",
                param_hint="--service",
            )
        if not settings.internal_token:
            raise typer.BadParameter(
                "a service's process needs RECUR_INTERNAL_TOKEN (16 characters or more), "
                "the secret the other services' calls carry",
                param_hint="--service",
            )
        rt = build_runtime(settings, local_services={service})
        application = create_service_app(rt, service)
    uvicorn.run(
        application,
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's loggers go through ours (RECUR_LOG_FORMAT)
    )


@app.command()
def gateway(
    host: Annotated[str | None, typer.Option(help="Default RECUR_HOST or 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="Default RECUR_PORT or 8000")] = None,
    upstream: Annotated[
        list[str] | None,
        typer.Option(
            help="A service's instances, NAME=URL,URL (repeat for each service); default "
            "RECUR_GATEWAY_UPSTREAMS, else RECUR_SERVICE_URLS"
        ),
    ] = None,
) -> None:
    """Serve the public API as the gateway in front of the services' processes: API keys,
    rate limits, and each request forwarded to a healthy instance of its service."""
    import uvicorn

    from recur.gateway_app import create_gateway_app, gateway_upstreams
    from recur.runtime import build_runtime

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        upstreams = gateway_upstreams(settings, upstream)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--upstream") from error
    if not settings.internal_token:
        raise typer.BadParameter(
            "the gateway needs RECUR_INTERNAL_TOKEN (16 characters or more), the secret it "
            "hands the services with each request's tenant",
            param_hint="--upstream",
        )
    application = create_gateway_app(build_runtime(settings), upstreams)
    uvicorn.run(
        application,
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,
    )


@keys_app.command("create")
def create_key(
    tenant: Annotated[str, typer.Option(help="The tenant's name; created if new")],
) -> None:
    """Create a secret API key for a tenant. The key is the last line of the output."""
    from recur.gateway.keys import create_key as issue
    from recur.kit.clock import SystemClock
    from recur.kit.db import Database

    if not tenant.strip():
        raise typer.BadParameter("a tenant needs a name", param_hint="--tenant")

    async def run() -> None:
        db = Database(_settings().database_url)
        try:
            issued = await issue(db, SystemClock(), tenant)
        finally:
            await db.dispose()
        console.print(f"tenant {issued.tenant_name} ({issued.tenant_id}), key {issued.key_id}")
        console.print("the secret is shown once; keep it safe:", style="bold")
        print(issued.secret)

    asyncio.run(run())


@keys_app.command("revoke")
def revoke_key(key_id: Annotated[str, typer.Argument(help="The key's id (key_...)")]) -> None:
    """Revoke an API key for good. Running processes stop accepting it within
    KEY_CACHE_SECONDS (their cache of resolved keys)."""
    from recur.gateway.keys import KEY_CACHE_SECONDS
    from recur.gateway.keys import revoke_key as revoke
    from recur.kit.clock import SystemClock
    from recur.kit.db import Database

    async def run() -> bool:
        db = Database(_settings().database_url)
        try:
            return await revoke(db, SystemClock(), key_id)
        finally:
            await db.dispose()

    if not asyncio.run(run()):
        console.print(f"no key {key_id} that is not revoked already", style="red", markup=False)
        raise typer.Exit(1)
    console.print(
        f"key {key_id} revoked; running processes refuse it within {KEY_CACHE_SECONDS:.0f} s",
        markup=False,
    )


@app.command("bill-run")
def bill_run(
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Worker processes sharing the renewals")
    ] = 1,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=10_000,
            help="Subscriptions a worker claims at once (default RECUR_BILL_RUN_BATCH_SIZE)",
        ),
    ] = None,
) -> None:
    """Create and charge every renewal that is due now, end what is due to end, then retry
    the failed renewal charges that are due (dunning). Any number of bill runs may run at once:
    they share the work."""
    from datetime import datetime

    from recur.bill_run import run_workers
    from recur.kit.db import is_sqlite
    from recur.payments.schemas import DunningRunResult
    from recur.runtime import build_runtime
    from recur.subscriptions import billing

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    if workers > 1 and is_sqlite(settings.database_url):
        console.print("SQLite lets one writer in at a time: the workers will take turns")

    async def prepare() -> tuple[datetime, int]:
        rt = build_runtime(settings)
        try:
            # Events a bill run that died left undelivered go out first: a renewal whose
            # payment succeeded is finished once its order knows it is paid.
            await rt.bus.redeliver_pending()
            now = rt.clock.now()
            return now, await billing.count_due(rt, now=now)
        finally:
            await rt.close()

    async def renew_here(now: datetime, on_progress: Callable[[int], None]) -> BillRunResult:
        rt = build_runtime(settings)
        try:
            return await billing.run(rt, now=now, batch_size=batch_size, on_progress=on_progress)
        finally:
            await rt.close()

    async def retry() -> DunningRunResult:
        rt = build_runtime(settings)
        try:
            return await rt.payments.run_due_retries(None, rt.clock.now(), None)
        finally:
            await rt.close()

    now, due = asyncio.run(prepare())
    failures: list[str] = []
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("bill run", total=due or None)

        def advance(n: int) -> None:
            progress.advance(task, n)

        if workers == 1:
            result = asyncio.run(renew_here(now, advance))
        else:
            outcome = run_workers(
                settings, now=now, workers=workers, batch_size=batch_size, on_progress=advance
            )
            result, failures = outcome.result, outcome.failures
    for failure in failures:
        console.print(failure, style="red", markup=False, highlight=False)
    # After the renewals: a renewal that just failed is not due for a retry yet.
    retries = asyncio.run(retry())
    console.print(
        f"renewed {result.renewed}, payment failed {result.failed}, "
        f"ended {result.canceled}, errors {result.errors}"
    )
    console.print(
        f"retries due {retries.processed}: recovered {retries.recovered}, "
        f"failed again {retries.failed}, exhausted {retries.exhausted}, "
        f"closed {retries.closed}, errors {retries.errors}"
    )
    if result.errors or retries.errors or failures:
        raise typer.Exit(1)


@bench_app.command("bill-run")
def bench_bill_run(
    subscriptions: Annotated[int, typer.Option(min=1, help="How many due subscriptions to seed")],
    workers: Annotated[int, typer.Option(min=1, max=64, help="Bill-run worker processes")] = 2,
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="Subscriptions a worker claims at once")
    ] = 1000,
) -> None:
    """Seed N subscriptions due for renewal in a new tenant, renew them all with the bill run,
    and print renewals per second and peak memory. Leaves the data for `recur verify`."""
    from recur.bench import bench_bill_run as run_bench

    settings = _settings()
    console.print(f"database {_redact(settings.database_url)}, {workers} worker process(es)")
    result = run_bench(settings, subscriptions, workers, batch_size, console.print)
    console.print(
        f"renewed {result.renewed} of {result.subscriptions} "
        f"(payment failed {result.failed}, errors {result.errors}) in {result.seconds:.1f} s: "
        f"[bold]{result.rate:,.0f} renewals/s[/bold], "
        f"peak memory {result.peak_memory_mib:.0f} MiB per worker"
    )
    if result.errors or result.renewed != result.subscriptions:
        raise typer.Exit(1)


@bench_app.command("api")
def bench_api(
    cluster: Annotated[
        Path | None,
        typer.Option(
            help="The state directory of a running `recur cluster up` to drive (its rate limit "
            "must allow the load); default: start one (1 instance per service), stop it after"
        ),
    ] = None,
    connections: Annotated[
        int, typer.Option(min=8, max=4096, help="wrk connections, a multiple of 8")
    ] = 64,
    duration: Annotated[float, typer.Option(min=1, help="Seconds of each measured run")] = 20.0,
    warmup: Annotated[
        float, typer.Option(min=0, help="Seconds of warm-up, through the gateway and straight")
    ] = 5.0,
    customers: Annotated[
        int, typer.Option(min=1, max=100_000, help="Customers (with a card and a subscription)")
    ] = 200,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Drive the public API with wrk: reads of customers and subscriptions and payment POSTs,
    through the gateway and straight to the services, then payments alone through the
    gateway; print requests/s, p50 and p99, and whether the targets are met. Any error
    response fails it. Seeds a new tenant in the configured database."""
    import json

    from recur.bench_api import BenchError, describe
    from recur.bench_api import bench_api as run_bench

    settings = _settings()
    progress = Console(stderr=True) if json_output else console

    def say(line: str) -> None:
        progress.print(line, markup=False, highlight=False, soft_wrap=True)

    say(
        f"database {_redact(settings.database_url)}, "
        f"redis {_redact(settings.redis_url) if settings.redis_url else '(none)'}"
    )
    try:
        report = run_bench(
            settings,
            cluster=cluster,
            connections=connections,
            seconds=duration,
            warmup_seconds=warmup,
            customers=customers,
            say=say,
        )
    except BenchError as error:
        if error.report is not None:  # what was measured, the failed run included
            if json_output:
                print(json.dumps(error.report.to_json(), indent=2))
            else:
                for line in describe(error.report):
                    say(line)
        progress.print(str(error), style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from error
    if json_output:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for line in describe(report):
            say(line)


@bench_app.command("payment-faults")
def bench_payment_faults(
    payments: Annotated[int, typer.Option(min=1, max=100_000, help="How many orders to pay")],
) -> None:
    """Pay N orders through a sandbox that times out on 30% of charges and fails 10%, run the
    reconciler until nothing is pending, and check that no order was charged twice and that
    `recur verify` is clean. Seeds a new tenant in the configured database."""
    from recur.bench_payments import bench_payment_faults as run_bench

    settings = _settings()
    console.print(f"database {_redact(settings.database_url)}")
    report = run_bench(settings, payments, lambda line: console.print(line, markup=False))
    for line in report.lines():
        console.print(line, markup=False, highlight=False)
    if (
        report.max_charges_per_order > 1
        or report.succeeded_without_charge
        or report.pending_left
        or report.verify_failures
    ):
        raise typer.Exit(1)


@bench_app.command("payment-failover")
def bench_payment_failover(
    payments: Annotated[int, typer.Option(min=1, max=100_000, help="How many orders to pay")],
    stripe_url: Annotated[
        str | None,
        typer.Option(help="Where stripe is reached (default: a loopback port refusing calls)"),
    ] = None,
) -> None:
    """Pay N orders routed `stripe` then `sandbox` with stripe down, and check that every one
    went through the sandbox, stripe's breaker opened, none was charged twice, none is left
    pending and `recur verify` is clean. Seeds a new tenant in the configured database."""
    from recur.bench_failover import bench_payment_failover as run_bench

    settings = _settings()
    console.print(f"database {_redact(settings.database_url)}")

    def say(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    report = run_bench(settings, payments, say, stripe_url)
    for line in report.lines():
        say(line)
    if not report.ok:
        raise typer.Exit(1)


@payments_app.command("reconcile")
def payments_reconcile() -> None:
    """Ask the gateways about every payment whose outcome is unknown (or whose process died
    while charging it) and settle it; charge again only what certainly never arrived. Pending
    refunds are asked about and settled the same way."""
    from recur.payments.reconcile import ReconcileResult, reconcile_all
    from recur.runtime import build_runtime

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)

    async def run() -> ReconcileResult:
        rt = build_runtime(settings)
        try:
            return await reconcile_all(rt)
        finally:
            await rt.close()

    result = asyncio.run(run())
    console.print(
        f"asked {result.asked}: succeeded {result.succeeded}, failed {result.failed}, "
        f"charged again {result.retried}, left pending {result.left_pending}; refunds asked "
        f"{result.refunds_asked}: succeeded {result.refunds_succeeded}, "
        f"failed {result.refunds_failed}"
    )


StateDir = Annotated[Path, typer.Option(help="Where the cluster's state file and logs are")]


@cluster_app.command("up")
def cluster_up(
    instances: Annotated[int, typer.Option(min=1, max=32, help="Instances of every service")] = 1,
    base_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="The gateways' ports, then the services' instances' (default: free ports)",
        ),
    ] = None,
    state_dir: StateDir = Path(".recur-cluster"),
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds to wait for every process to be healthy")
    ] = 60.0,
) -> None:
    """Migrate, then start K instances of every service, two gateways and a bill-run worker
    as detached processes sharing a generated RECUR_INTERNAL_TOKEN; wait until all are
    healthy and print the gateways' URLs."""
    from recur.cluster import ClusterError, up

    settings = _settings()
    try:
        urls = up(settings, instances, state_dir, base_port, timeout, console.print)
    except ClusterError as error:
        console.print(str(error), style="red", markup=False, highlight=False)
        raise typer.Exit(1) from error
    console.print(f"state and logs in {state_dir}; stop with `recur cluster down`")
    for url in urls:
        print(url)


@cluster_app.command("down")
def cluster_down(
    state_dir: StateDir = Path(".recur-cluster"),
    grace: Annotated[float, typer.Option(min=0, help="Seconds between SIGTERM and SIGKILL")] = 10.0,
) -> None:
    """Stop every process of the cluster that `recur cluster up` started."""
    from recur.cluster import ClusterError, down

    try:
        down(state_dir, grace, console.print)
    except ClusterError as error:
        console.print(str(error), style="red", markup=False, highlight=False)
        raise typer.Exit(1) from error


@app.command()
def verify() -> None:
    """Check the books: balanced ledgers, paid orders covered, no period ordered twice,
    balances equal to their ledger, receivables equal to what orders owe, gateway cash equal to
    payments less refunds and disputes, disputes' ledgers, payments applied to their orders.
    Exits 1 naming the offending ids."""
    from recur.kit.db import Database
    from recur.verify import Finding
    from recur.verify import verify as run_checks

    async def run() -> list[Finding]:
        db = Database(_settings().database_url)
        try:
            return await run_checks(db)
        finally:
            await db.dispose()

    findings = asyncio.run(run())
    for finding in findings:
        if finding.ok:
            console.print(f"ok      {finding.check}")
        else:
            console.print(f"FAILED  {finding.check}: {', '.join(finding.offenders)}", style="red")
    if not all(finding.ok for finding in findings):
        raise typer.Exit(1)


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main() -> None:
    app()
