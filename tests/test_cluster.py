"""`recur cluster up/down` as real processes on PostgreSQL: the topology answers through both
gateways, and `down` leaves no process and no port behind."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from .conftest import PG_URL, _worker_suffix

RECUR = [str(Path(sys.executable).with_name("recur"))]


@pytest.fixture
def empty_postgres_url() -> str:
    """A fresh, empty PostgreSQL database for this test worker: `cluster up` migrates it."""
    assert PG_URL is not None
    base, _, name = PG_URL.rpartition("/")
    db_name = f"{name}_cluster_{_worker_suffix()}"

    async def build() -> None:
        admin = sa.ext.asyncio.create_async_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
            await conn.execute(sa.text(f'CREATE DATABASE "{db_name}"'))
        await admin.dispose()

    asyncio.run(build())
    return f"{base}/{db_name}"


def _gone(pid: int) -> bool:
    """No such process, or only its zombie (reaped by whoever inherited it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def cluster_env(empty_postgres_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECUR_")}
    env.update(
        RECUR_DATABASE_URL=empty_postgres_url,
        RECUR_BILL_RUN_INTERVAL_SECONDS="3600",
        RECUR_GATEWAY_HEALTH_INTERVAL_SECONDS="0.5",
        COLUMNS="200",
    )
    yield env
    # Whatever happened, nothing stays up.
    if (tmp_path / "tmp" / "cluster.json").exists():
        subprocess.run(
            [*RECUR, "cluster", "down", "--state-dir", "tmp", "--grace", "2"],
            cwd=tmp_path,
            env=env,
            check=False,
        )


def _recur(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RECUR, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90
    )


# CI always configures PostgreSQL (and conftest fails the run without it there).
@pytest.mark.skipif(PG_URL is None, reason="PostgreSQL not configured")
async def test_cluster_up_serves_through_both_gateways_and_down_stops_it(
    cluster_env: dict[str, str], tmp_path: Path
) -> None:
    started = _recur(
        tmp_path, cluster_env, "cluster", "up", "--instances", "1", "--state-dir", "tmp"
    )
    assert started.returncode == 0, started.stdout + started.stderr
    state = json.loads((tmp_path / "tmp" / "cluster.json").read_text())
    assert state["status"] == "up"
    gateways = state["gateways"]
    assert len(gateways) == 2
    assert started.stdout.split()[-2:] == gateways
    roles = sorted(p["role"] for p in state["processes"])
    assert roles == sorted(["bill-run", "customers", "gateway", "gateway", "orders", "payments",
                            "subscriptions"])  # fmt: skip

    again = _recur(tmp_path, cluster_env, "cluster", "up", "--state-dir", "tmp")
    assert again.returncode == 1
    assert "already up" in again.stdout

    issued = _recur(tmp_path, cluster_env, "keys", "create", "--tenant", "acme")
    assert issued.returncode == 0, issued.stdout + issued.stderr
    key = issued.stdout.strip().splitlines()[-1]
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(headers=auth, timeout=10) as http:
        for gateway in gateways:
            created = await http.post(
                f"{gateway}/v1/customers", json={"name": "Ada", "currency": "USD"}
            )
            assert created.status_code == 200, created.text
            customer_id = created.json()["id"]
            for other in gateways:
                got = await http.get(f"{other}/v1/customers/{customer_id}")
                assert got.status_code == 200, got.text
                assert got.json()["name"] == "Ada"

    stopped = _recur(tmp_path, cluster_env, "cluster", "down", "--state-dir", "tmp")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not (tmp_path / "tmp" / "cluster.json").exists()
    assert all(_gone(pid) for pid in state["pids"])
    ports = [p["port"] for p in state["processes"] if p["port"] is not None]
    assert len(ports) == 6
    assert all(_port_free(port) for port in ports)

    nothing = _recur(tmp_path, cluster_env, "cluster", "down", "--state-dir", "tmp")
    assert nothing.returncode == 1


def test_cluster_refuses_sqlite(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECUR_")}
    env["RECUR_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'recur.db'}"
    refused = _recur(tmp_path, env, "cluster", "up", "--state-dir", "tmp")
    assert refused.returncode == 1
    assert "needs PostgreSQL" in refused.stdout
    assert not (tmp_path / "tmp").exists()


@pytest.mark.skipif(PG_URL is None, reason="PostgreSQL not configured")
def test_a_process_failing_at_start_up_stops_the_rest(
    cluster_env: dict[str, str], tmp_path: Path
) -> None:
    # `recur migrate` sets no log level; every server rejects this one as it starts.
    env = {**cluster_env, "RECUR_LOG_LEVEL": "NOT-A-LEVEL"}
    failed = _recur(tmp_path, env, "cluster", "up", "--state-dir", "tmp")
    assert failed.returncode == 1
    assert "exited with status 1 during start-up" in failed.stdout
    assert "Unknown level" in failed.stdout  # the tail of its log
    assert not (tmp_path / "tmp" / "cluster.json").exists()
