"""Driving wrk for `recur bench api`: the Lua script of a run, the run, and what it measured.

The script (`bench_wrk.lua`, filled in per run) gives each wrk thread one kind of request and
its own address (`thread.addr`), sends every request with its own id (X-Request-Id, and the
Idempotency-Key of a POST), and prints, from its `done` function, one JSON line: wrk's latency
distribution and counters, and per thread the requests sent, answered 2xx, answered otherwise,
replayed, and left unanswered past the timeout (wrk counts a timeout only when the late answer
comes, never for a request left unanswered).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from recur.bench_api import Report

# The service owning each kind of request.
KIND_SERVICE = {"customer": "customers", "subscription": "subscriptions", "payment": "payments"}
PAYMENT_AMOUNT = 500
CURRENCY = "USD"
PAYMENT_DESCRIPTION = "recur bench api"
WRK_TIMEOUT_SECONDS = 5
_RESULT_MARK = "RECUR_BENCH_RESULT "


@functools.cache
def _script() -> Template:
    return Template(files("recur").joinpath("bench_wrk.lua").read_text())


class BenchError(Exception):
    """Why the bench could not run, or a run that had errors; for the user. `report` holds
    what was measured until then, the failed run included."""

    def __init__(self, message: str, report: Report | None = None):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class Topology:
    gateways: list[str]
    instances: dict[str, list[str]]  # service -> its instances' URLs
    pids: dict[str, list[int]] = field(default_factory=dict)  # "gateway" or service -> pids


@dataclass(frozen=True)
class Seeded:
    tenant_id: str
    tenant_name: str
    secret: str = field(repr=False)
    customer_ids: list[str]
    subscription_ids: list[str]


@dataclass(frozen=True)
class KindCount:
    threads: int
    connections: int
    sent: int  # requests the script made (a POST's Idempotency-Key is used by one only)
    ok: int  # 2xx responses
    failed: int  # other responses
    replayed: int  # responses marked Idempotent-Replayed
    stuck: int  # requests left unanswered for longer than the timeout


@dataclass(frozen=True)
class RunResult:
    name: str
    via: str  # "gateway" or "direct"
    connections: int
    seconds: float
    requests: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    socket_errors: dict[str, int]
    non_2xx: int
    stuck: int
    kinds: dict[str, KindCount]
    first_error: str | None
    # Milliseconds of CPU each process role spent per request answered during the run.
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return self.non_2xx + self.stuck + sum(self.socket_errors.values())


def wrk_path() -> str:
    """The wrk executable; BenchError saying how to install it when there is none."""
    found = shutil.which("wrk")
    if found is None:
        raise BenchError(
            "`recur bench api` drives the load with wrk, which is not installed: "
            "`apt-get install wrk` (Debian, Ubuntu) or `brew install wrk` (macOS)"
        )
    return found


def cpu_seconds(pids: list[int]) -> float | None:
    """The CPU time the processes have used (Linux /proc), or None where it cannot be read.
    On a shared machine this is the figure to compare: throughput moves with whatever else
    runs, the CPU one request costs each process much less."""
    total = 0
    try:
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    except (OSError, ValueError, IndexError):
        return None
    return total / os.sysconf("SC_CLK_TCK")


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string of ASCII is a valid Lua string literal


def _lua_list(values: list[str]) -> str:
    return "{" + ",".join(_lua_string(value) for value in values) + "}"


def wrk_script(
    kinds: tuple[str, ...],
    addresses: list[str],
    seeded: Seeded,
    id_prefix: str,
    timeout_seconds: int = WRK_TIMEOUT_SECONDS,
) -> str:
    """The Lua script for one wrk run: thread i sends `kinds[i]` to `addresses[i]` (URLs)."""
    hosts, ports = [], []
    for address in addresses:
        parts = urlsplit(address)
        hosts.append(parts.hostname or "127.0.0.1")
        ports.append(str(parts.port or 80))
    return _script().substitute(
        {
            "kinds": _lua_list(list(kinds)),
            "hosts": _lua_list(hosts),
            "ports": _lua_list(ports),
            "customers": _lua_list(seeded.customer_ids),
            "subscriptions": _lua_list(seeded.subscription_ids),
            "auth": _lua_string(f"Bearer {seeded.secret}"),
            "id_prefix": _lua_string(id_prefix),
            "timeout": timeout_seconds,
            "amount": PAYMENT_AMOUNT,
            "currency": _lua_string(CURRENCY),
            "description": _lua_string(PAYMENT_DESCRIPTION),
            "mark": _RESULT_MARK,
        }
    )


def thread_addresses(kinds: tuple[str, ...], via: str, topology: Topology) -> list[str]:
    """Each thread's address: the gateways in turn, or in turn the instances of the service
    owning the thread's kind."""
    if via == "gateway":
        return [topology.gateways[i % len(topology.gateways)] for i in range(len(kinds))]
    turns: dict[str, int] = {}
    addresses = []
    for kind in kinds:
        service = KIND_SERVICE[kind]
        urls = topology.instances[service]
        turn = turns.get(service, 0)
        turns[service] = turn + 1
        addresses.append(urls[turn % len(urls)])
    return addresses


def parse_wrk_output(name: str, via: str, connections: int, output: str) -> RunResult:
    """The result line the script's `done` printed, as a RunResult."""
    line = next((line for line in output.splitlines() if line.startswith(_RESULT_MARK)), None)
    if line is None:
        raise BenchError(f"{name}: wrk printed no result:\n{output[-2000:]}")
    raw = json.loads(line[len(_RESULT_MARK) :])
    per_thread = connections // len(raw["threads"])
    kinds: dict[str, KindCount] = {}
    for thread in raw["threads"]:
        was = kinds.get(thread["kind"], KindCount(0, 0, 0, 0, 0, 0, 0))
        kinds[thread["kind"]] = KindCount(
            was.threads + 1,
            was.connections + per_thread,
            was.sent + thread["sent"],
            was.ok + thread["ok"],
            was.failed + thread["failed"],
            was.replayed + thread["replayed"],
            was.stuck + thread["stuck"],
        )
    errors = [thread["first_error"] for thread in raw["threads"] if thread["first_error"]]
    seconds = raw["duration_us"] / 1e6
    return RunResult(
        name=name,
        via=via,
        connections=connections,
        seconds=seconds,
        requests=raw["requests"],
        requests_per_second=raw["requests"] / seconds if seconds else 0.0,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        socket_errors=raw["errors"],
        non_2xx=sum(kind.failed for kind in kinds.values()),
        stuck=sum(kind.stuck for kind in kinds.values()),
        kinds=kinds,
        first_error=errors[0] if errors else None,
    )


def run_wrk(
    wrk: str,
    name: str,
    via: str,
    kinds: tuple[str, ...],
    topology: Topology,
    seeded: Seeded,
    connections: int,
    seconds: float,
    work_dir: Path,
    timeout_seconds: int = WRK_TIMEOUT_SECONDS,
) -> RunResult:
    """One wrk run, errors included; BenchError if wrk itself fails."""
    addresses = thread_addresses(kinds, via, topology)
    script = work_dir / f"{name}.lua"
    # The id prefix is new for every run: no Idempotency-Key of one run is met in another.
    script.write_text(
        wrk_script(kinds, addresses, seeded, f"bench-{secrets.token_hex(8)}", timeout_seconds)
    )
    command = [
        wrk,
        f"--threads={len(kinds)}",
        f"--connections={connections}",
        f"--duration={max(1, round(seconds))}s",
        f"--timeout={timeout_seconds}s",
        f"--script={script}",
        addresses[0],
    ]
    before = {role: cpu_seconds(pids) for role, pids in topology.pids.items()}
    finished = subprocess.run(  # noqa: S603 (wrk, with our arguments)
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    after = {role: cpu_seconds(pids) for role, pids in topology.pids.items()}
    if finished.returncode != 0:
        raise BenchError(f"{name}: wrk exited {finished.returncode}:\n{finished.stderr[-2000:]}")
    result = parse_wrk_output(name, via, connections, finished.stdout)
    cpu = {}
    for role, used in after.items():
        start = before.get(role)
        if used is not None and start is not None and result.requests:
            cpu[role] = round((used - start) * 1000 / result.requests, 3)
    return dataclasses.replace(result, cpu_ms_per_request=cpu)


def failure(result: RunResult) -> str | None:
    """What went wrong in a run, if anything did."""
    if not result.errors:
        return None
    return (
        f"{result.name} FAILED: {result.non_2xx} error responses, {result.stuck} requests "
        f"unanswered too long and socket errors {result.socket_errors} "
        f"in {result.requests} requests; the first error: "
        f"{result.first_error or '(a socket error: see the services logs)'}"
    )
