"""`recur bench api` driving a real topology on PostgreSQL and a Redis of its own with wrk: the
report's figures are real (non-zero rates, no error), every payment POST it counted made exactly
one payment (each with its own Idempotency-Key), and an error response fails the bench."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from recur import bench_api, bench_wrk
from recur.bench_api import MIX_THREADS
from recur.bench_wrk import (
    PAYMENT_DESCRIPTION,
    BenchError,
    Seeded,
    Topology,
    parse_wrk_output,
    thread_addresses,
    wrk_script,
)
from recur.settings import Settings

from .conftest import PG_URL, REQUIRE, _worker_suffix

RECUR = [str(Path(sys.executable).with_name("recur"))]
WRK = shutil.which("wrk")
REDIS_SERVER = shutil.which("redis-server")

if REQUIRE and (WRK is None or REDIS_SERVER is None):
    raise RuntimeError(
        "RECUR_TEST_REQUIRE_SERVICES=1 but wrk or redis-server is not installed "
        "(.ci/run installs wrk: apt-get install wrk)"
    )

needs_topology = pytest.mark.skipif(
    PG_URL is None or WRK is None or REDIS_SERVER is None,
    reason="needs PostgreSQL (RECUR_TEST_DATABASE_URL), wrk and redis-server",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def bench_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL database and a redis-server on a free port, both this test's own
    (the cluster's event streams and rate limits meet no other test's), as the environment
    of the `recur` commands."""
    assert PG_URL is not None and REDIS_SERVER is not None
    base, _, name = PG_URL.rpartition("/")
    db_name = f"{name}_bench_api_{_worker_suffix()}"

    async def create_database() -> None:
        admin = sa.ext.asyncio.create_async_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
            await conn.execute(sa.text(f'CREATE DATABASE "{db_name}"'))
        await admin.dispose()

    asyncio.run(create_database())
    port = _free_port()
    redis = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECUR_")}
    env.update(
        RECUR_DATABASE_URL=f"{base}/{db_name}",
        RECUR_REDIS_URL=f"redis://127.0.0.1:{port}/0",
        RECUR_BILL_RUN_INTERVAL_SECONDS="3600",
        COLUMNS="200",
    )
    try:
        yield env
    finally:
        if (tmp_path / "cluster" / "cluster.json").exists():
            subprocess.run(
                [*RECUR, "cluster", "down", "--state-dir", "cluster", "--grace", "2"],
                cwd=tmp_path,
                env=env,
                check=False,
            )
        redis.terminate()
        redis.wait(timeout=10)


def _recur(
    tmp_path: Path, env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RECUR, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )


SHORT = ("--duration", "2", "--warmup", "1", "--connections", "8", "--customers", "12", "--json")


def _check_report(report: dict[str, Any]) -> None:
    runs = {run["name"]: run for run in report["runs"]}
    assert sorted(runs) == ["mix-direct", "mix-gateway", "payments-gateway"]
    for run in [*report["runs"], *report["warmups"]]:
        assert run["requests"] > 0 and run["requests_per_second"] > 0, run
        assert run["non_2xx"] == 0 and run["stuck"] == 0, run
        assert not any(run["socket_errors"].values()), run
        assert 0 < run["p50_ms"] <= run["p99_ms"] <= run["max_ms"], run
        assert run["first_error"] is None
        for kind in run["kinds"].values():
            assert kind["replayed"] == 0  # no Idempotency-Key met twice
    for name in ("mix-gateway", "mix-direct"):
        kinds = runs[name]["kinds"]
        assert sorted(kinds) == ["customer", "payment", "subscription"]
        assert all(kind["ok"] > 0 for kind in kinds.values()), kinds
        assert sum(kind["connections"] for kind in kinds.values()) == 8
    assert list(runs["payments-gateway"]["kinds"]) == ["payment"]
    assert report["failure"] is None
    # The CPU each role spent per request: the gateways work in the gateway run only.
    cpu = {name: runs[name]["cpu_ms_per_request"] for name in runs}
    assert set(cpu["mix-direct"]) == {"gateway", "customers", "subscriptions", "orders", "payments"}
    assert cpu["mix-gateway"]["gateway"] > cpu["mix-direct"]["gateway"]
    assert cpu["mix-direct"]["customers"] > 0 and cpu["payments-gateway"]["payments"] > 0
    direct = runs["mix-direct"]["requests_per_second"]
    assert report["ratio"] == pytest.approx(runs["mix-gateway"]["requests_per_second"] / direct)
    targets = {target["name"]: target for target in report["targets"]}
    assert len(targets) == 3
    payments = targets["POST /v1/payments alone through the gateway"]
    assert payments["met"] == (runs["payments-gateway"]["requests_per_second"] >= 1000)
    sent = sum(run["kinds"].get("payment", {}).get("sent", 0) for run in report["runs"])
    sent += sum(run["kinds"].get("payment", {}).get("sent", 0) for run in report["warmups"])
    assert report["payments_sent"] == sent > 0


async def _bench_payments(gateway: str, secret: str) -> list[dict[str, Any]]:
    """Every payment of the tenant the bench made (not its subscriptions' first charges)."""
    found: list[dict[str, Any]] = []
    after: str | None = None
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {secret}"}) as http:
        while True:
            params: dict[str, Any] = {"limit": 100}
            if after:
                params["starting_after"] = after
            page = (await http.get(f"{gateway}/v1/payments", params=params)).raise_for_status()
            body = page.json()
            found += [p for p in body["data"] if p["description"] == PAYMENT_DESCRIPTION]
            if not body["has_more"]:
                return found
            after = body["data"][-1]["id"]


@needs_topology
def test_bench_against_a_running_cluster_makes_one_payment_per_post(
    bench_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**bench_env, "RECUR_RATE_LIMIT_PER_SECOND": "100000", "RECUR_RATE_LIMIT_BURST": "100000"}
    started = _recur(tmp_path, env, "cluster", "up", "--state-dir", "cluster")
    assert started.returncode == 0, started.stdout + started.stderr

    ran = _recur(tmp_path, env, "bench", "api", "--cluster", "cluster", *SHORT)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    report = json.loads(ran.stdout)
    _check_report(report)
    state = json.loads((tmp_path / "cluster" / "cluster.json").read_text())
    assert report["gateways"] == state["gateways"]
    # The direct runs went to the instances, not the gateways.
    assert report["instances"]["payments"] == [
        p["url"] for p in state["processes"] if p["role"] == "payments"
    ]

    issued = _recur(tmp_path, env, "keys", "create", "--tenant", report["tenant_name"])
    assert issued.returncode == 0, issued.stdout + issued.stderr
    secret = issued.stdout.strip().splitlines()[-1]
    gateway = state["gateways"][0]
    # A POST in flight when wrk stopped is still being answered: wait for the count to settle.
    deadline = time.monotonic() + 20
    while True:
        payments = asyncio.run(_bench_payments(gateway, secret))
        if len(payments) >= report["payments_sent"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    # One payment per POST sent: no Idempotency-Key was used twice, none was lost.
    assert len(payments) == report["payments_sent"]
    assert {p["status"] for p in payments} == {"succeeded"}
    assert {(p["amount"], p["currency"]) for p in payments} == {
        (bench_wrk.PAYMENT_AMOUNT, bench_wrk.CURRENCY)
    }


@needs_topology
def test_bench_starts_its_own_cluster_and_stops_it(
    bench_env: dict[str, str], tmp_path: Path
) -> None:
    ran = _recur(tmp_path, bench_env, "bench", "api", *SHORT)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    report = json.loads(ran.stdout)
    _check_report(report)
    assert len(report["gateways"]) == 2
    assert all(len(urls) == 1 for urls in report["instances"].values())
    # Stopped at the end: nothing answers where the cluster was.
    urls = [*report["gateways"], *(u for urls in report["instances"].values() for u in urls)]
    assert not [url for url in urls if _answers(f"{url}/healthz")]
    assert "stopped 7 processes" in ran.stderr


# --- without a topology -------------------------------------------------------------------


SEEDED = Seeded("ten_1", "bench", "sk_secret", ["cus_1", "cus_2"], ["sub_1", "sub_2"])
TOPOLOGY = Topology(
    ["http://127.0.0.1:8000", "http://127.0.0.1:8001"],
    {
        "customers": ["http://127.0.0.1:8101", "http://127.0.0.1:8111"],
        "subscriptions": ["http://127.0.0.1:8102"],
        "payments": ["http://127.0.0.1:8104"],
    },
)


def test_each_thread_goes_to_a_gateway_or_to_an_instance_owning_its_requests() -> None:
    through = thread_addresses(MIX_THREADS, "gateway", TOPOLOGY)
    assert through == TOPOLOGY.gateways * 4
    direct = thread_addresses(MIX_THREADS, "direct", TOPOLOGY)
    for kind, url in zip(MIX_THREADS, direct, strict=True):
        assert url in TOPOLOGY.instances[bench_wrk.KIND_SERVICE[kind]]
    # The customer threads take the customers' instances in turn.
    customer_urls = [
        url for kind, url in zip(MIX_THREADS, direct, strict=True) if kind == "customer"
    ]
    assert customer_urls == [
        "http://127.0.0.1:8101",
        "http://127.0.0.1:8111",
        "http://127.0.0.1:8101",
    ]


def test_the_script_gives_each_thread_its_address_and_each_payment_its_own_key() -> None:
    addresses = thread_addresses(MIX_THREADS, "direct", TOPOLOGY)
    script = wrk_script(MIX_THREADS, addresses, SEEDED, "bench-abc")
    assert '{"127.0.0.1","127.0.0.1"' in script
    assert '"8101","8102","8104","8111"' in script
    assert '"Bearer sk_secret"' in script
    assert 'local id = ID_PREFIX .. "-" .. tid .. "-" .. n' in script
    assert '["Idempotency-Key"] = id' in script
    assert "${" not in script  # every placeholder filled


def _wrk_output(threads: list[dict[str, Any]], timeouts: int = 0) -> str:
    result = {
        "duration_us": 2_000_000,
        "requests": sum(t["ok"] + t["failed"] for t in threads),
        "p50_us": 1500,
        "p99_us": 9000,
        "max_us": 12000,
        "errors": {"connect": 0, "read": 0, "write": 0, "timeout": timeouts},
        "threads": threads,
    }
    return "Running 2s test\n" + bench_wrk._RESULT_MARK + json.dumps(result) + "\n"


def _thread(kind: str, ok: int, failed: int = 0, error: str = "", stuck: int = 0) -> dict[str, Any]:
    return {"kind": kind, "sent": ok + failed + 1, "ok": ok, "failed": failed, "replayed": 0,
            "stuck": stuck, "first_error": error}  # fmt: skip


def test_wrk_output_is_read_into_rates_latencies_and_counts_per_kind() -> None:
    output = _wrk_output([_thread("customer", 300), _thread("payment", 100),
                          _thread("customer", 200), _thread("payment", 100)])  # fmt: skip
    result = parse_wrk_output("mix-gateway", "gateway", 64, output)
    assert result.requests == 700
    assert result.requests_per_second == 350
    assert (result.p50_ms, result.p99_ms, result.max_ms) == (1.5, 9.0, 12.0)
    assert result.kinds["customer"].ok == 500 and result.kinds["customer"].connections == 32
    assert result.kinds["payment"].sent == 202 and result.kinds["payment"].threads == 2
    assert result.errors == 0 and result.first_error is None


def test_an_error_response_or_a_timeout_is_counted_with_the_first_error() -> None:
    output = _wrk_output(
        [_thread("customer", 10), _thread("payment", 5, 2, 'payment: 503 {"error": "x"}')], 1
    )
    result = parse_wrk_output("payments-gateway", "gateway", 8, output)
    assert result.non_2xx == 2
    assert result.errors == 3
    assert result.first_error == 'payment: 503 {"error": "x"}'


def test_requests_left_unanswered_are_counted_as_stuck() -> None:
    output = _wrk_output(
        [_thread("customer", 10), _thread("customer", 8, 0, "customer: no answer", stuck=1)]
    )
    result = parse_wrk_output("mix-direct", "direct", 8, output)
    assert (result.non_2xx, result.stuck, result.errors) == (0, 1, 1)
    assert bench_wrk.failure(result) is not None


class FakeService:
    """An HTTP/1.1 server on a free port answering 200 and echoing X-Request-Id, except for
    paths containing `hang`, which it never answers."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                fields = dict(
                    line.lower().split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line
                )
                await reader.readexactly(int(fields.get("content-length", 0)))
                if "hang" in head.split(" ")[1]:
                    await asyncio.Event().wait()  # never answered
                body = b'{"id":"x"}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"x-request-id: {fields['x-request-id']}\r\n".encode()
                    + f"content-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()

    def __enter__(self) -> str:
        self.thread.start()
        started = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port), self.loop
        )
        self.server = started.result(timeout=5)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *_: object) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@pytest.mark.skipif(WRK is None, reason="wrk not installed")
@pytest.mark.parametrize("customers", [["cus_a", "cus_b"], ["cus_a", "cus_hang"]])
def test_wrk_counts_answers_and_finds_the_requests_never_answered(
    customers: list[str], tmp_path: Path
) -> None:
    assert WRK is not None
    with FakeService() as url:
        topology = Topology([url], {"customers": [url]})
        seeded = Seeded("ten_1", "bench", "sk_secret", customers, ["sub_1", "sub_2"])
        result = bench_wrk.run_wrk(
            WRK, "fake", "direct", ("customer", "customer"), topology, seeded, 4, 3, tmp_path,
            timeout_seconds=1,
        )  # fmt: skip
    assert result.requests > 0 and result.non_2xx == 0
    count = result.kinds["customer"]
    assert count.ok == result.requests
    if "cus_hang" in customers:
        # Every connection ends up waiting on a request that is never answered.
        assert count.stuck == 4
        assert result.first_error and "no answer in 1 s to request bench-" in result.first_error
        assert bench_wrk.failure(result) is not None
    else:
        assert count.stuck == 0 and result.first_error is None
        # The first thread's request that wrk checks before the run is never sent.
        assert count.sent - count.ok <= 4


def test_wrk_printing_no_result_is_an_error() -> None:
    with pytest.raises(BenchError, match="wrk printed no result"):
        parse_wrk_output("mix-gateway", "gateway", 8, "unable to connect to 127.0.0.1:1\n")


def test_without_wrk_the_bench_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_wrk.shutil, "which", lambda _: None)
    with pytest.raises(BenchError, match="apt-get install wrk"):
        bench_wrk.wrk_path()


def test_connections_must_split_evenly_over_the_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bench_api, "wrk_path", lambda: "/usr/bin/wrk")
    with pytest.raises(BenchError, match="multiple of 8"):
        bench_api.bench_api(
            Settings(),
            cluster=None,
            connections=60,
            seconds=1,
            warmup_seconds=0,
            customers=1,
            say=lambda _: None,
        )


def test_a_run_with_errors_ends_the_bench_with_what_was_measured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(bench_api, "wrk_path", lambda: "/usr/bin/wrk")
    monkeypatch.setattr(bench_api, "topology_from_state", lambda _: TOPOLOGY)

    async def seed(*_: Any) -> Seeded:
        return SEEDED

    monkeypatch.setattr(bench_api, "seed", seed)
    outputs = iter(
        [
            _wrk_output([_thread("customer", 900), _thread("payment", 100)]),
            _wrk_output([_thread("customer", 1000), _thread("payment", 100)]),
            _wrk_output([_thread("payment", 40, 3, "payment: 503 no instance")], timeouts=2),
        ]
    )

    def run_wrk(wrk: str, name: str, via: str, kinds: Any, *_: Any) -> bench_wrk.RunResult:
        return parse_wrk_output(name, via, 8, next(outputs))

    monkeypatch.setattr(bench_api, "run_wrk", run_wrk)
    with pytest.raises(BenchError, match="payments-gateway FAILED: 3 error responses") as failed:
        bench_api.bench_api(
            Settings(),
            cluster=tmp_path,
            connections=8,
            seconds=1,
            warmup_seconds=0,
            customers=2,
            say=lambda _: None,
        )
    report = failed.value.report
    assert report is not None and report.failure is not None
    assert "payment: 503 no instance" in report.failure
    assert [run.name for run in report.runs] == ["mix-gateway", "mix-direct", "payments-gateway"]
    assert report.ratio == pytest.approx(1000 / 1100)
    targets = {target.name: target for target in report.targets()}
    assert targets["gateway/direct throughput (mix)"].met  # 91%, both runs clean
    # 21.5 requests/s would miss it anyway; with errors it is never met.
    assert not targets["POST /v1/payments alone through the gateway"].met
    assert report.payments_sent == 101 + 101 + 44
    assert "payments-gateway" in "\n".join(bench_api.describe(report))
