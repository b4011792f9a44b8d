"""No input gives a 500: schemathesis throws generated requests at every documented operation
of a real `recur serve` process, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings

PG_URL = os.environ.get("RECUR_TEST_DATABASE_URL")
BACKENDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]
RECUR = str(Path(sys.executable).with_name("recur"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fresh_postgres(suffix: str) -> str:
    assert PG_URL is not None
    base, _, database = PG_URL.rpartition("/")
    name = f"{database}_{suffix}"

    async def recreate() -> None:
        admin = sa.ext.asyncio.create_async_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        await admin.dispose()

    asyncio.run(recreate())
    return f"{base}/{name}"


class LiveServer:
    def __init__(self, url: str, key: str):
        self.url = url
        self.key = key


@pytest.fixture(scope="session", params=BACKENDS)
def live_server(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[LiveServer]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    if request.param == "sqlite":
        database_url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('fuzz') / 'recur.db'}"
    else:
        database_url = _fresh_postgres(f"fuzz_{worker}")
    port = _free_port()
    env = {
        **os.environ,
        "RECUR_DATABASE_URL": database_url,
        "RECUR_PORT": str(port),
        "RECUR_SCHEDULER_ENABLED": "false",
        "RECUR_RATE_LIMIT_PER_SECOND": "100000",
        "RECUR_RATE_LIMIT_BURST": "100000",
        "RECUR_LOG_LEVEL": "WARNING",
    }
    subprocess.run([RECUR, "migrate"], env=env, check=True, capture_output=True)
    keys = subprocess.run(
        [RECUR, "keys", "create", "--tenant", "fuzz"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    key = keys.stdout.strip().splitlines()[-1]
    server = subprocess.Popen([RECUR, "serve"], env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("recur serve did not start")
        yield LiveServer(url, key)
    finally:
        server.terminate()
        _, errors = server.communicate(timeout=10)
        # A 500 is also written to the log; fail on any traceback even if the check missed it.
        assert "Traceback" not in errors, errors[-5000:]


def test_no_request_gives_a_server_error(live_server: LiveServer) -> None:
    schema = schemathesis.openapi.from_url(f"{live_server.url}/openapi.json")
    headers = {"Authorization": f"Bearer {live_server.key}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def answers_without_server_error(case) -> None:
            response = case.call(headers=headers, timeout=30)
            assert response.status_code < 500, (
                case.method,
                case.formatted_path,
                case.body,
                response.text[:500],
            )
            content_type = response.headers.get("content-type") or [""]
            if response.status_code >= 400 and "json" in content_type[0]:
                error = response.json()["error"]
                assert error["type"] and error["code"] and error["message"]

        answers_without_server_error()
