"""The `recur` command: serve the API, migrate, issue keys, run the bill run."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from recur.settings import Settings

app = typer.Typer(help="Recur: open-source subscription billing.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys and tenants.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
bench_app = typer.Typer(help="Benchmarks, on the configured database.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
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
) -> None:
    """Serve the whole API (gateway and all four services) in this process."""
    import uvicorn

    from recur.app import create_app
    from recur.runtime import build_runtime

    settings = _settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    application = create_app(build_runtime(settings))
    uvicorn.run(
        application,
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level.lower(),
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


@app.command("bill-run")
def bill_run() -> None:
    """Create and charge every renewal that is due now, end what is due to end, then retry
    the failed renewal charges that are due (dunning)."""
    from recur.payments.schemas import DunningRunResult
    from recur.runtime import build_runtime
    from recur.subscriptions import billing

    async def run() -> tuple[billing.BillRunResult, DunningRunResult]:
        rt = build_runtime(_settings())
        try:
            due = await billing.count_due(rt)
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                task = progress.add_task("bill run", total=due or None)
                renewals = await billing.run(rt, on_progress=lambda n: progress.advance(task, n))
            # After the renewals: a renewal that just failed is not due for a retry yet.
            retries = await rt.payments.run_due_retries(None, rt.clock.now(), None)
            return renewals, retries
        finally:
            await rt.close()

    result, retries = asyncio.run(run())
    console.print(
        f"renewed {result.renewed}, payment failed {result.failed}, "
        f"ended {result.canceled}, errors {result.errors}"
    )
    console.print(
        f"retries due {retries.processed}: recovered {retries.recovered}, "
        f"failed again {retries.failed}, exhausted {retries.exhausted}, "
        f"closed {retries.closed}, errors {retries.errors}"
    )
    if result.errors or retries.errors:
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


@app.command()
def verify() -> None:
    """Check the books: balanced ledgers, paid orders covered, no period ordered twice,
    balances equal to their ledger, receivables equal to what orders owe, gateway cash equal to
    payments less refunds, payments applied to their orders. Exits 1 naming the offending ids."""
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
