"""`recur cluster up/down`: a whole distributed topology on loopback, for a demo and for tests.

`up` migrates the configured PostgreSQL database, then starts K instances of every service
(`recur serve --service NAME`), waits for their `/healthz`, starts two gateways in front of all
the instances (`recur gateway --upstream ...`) and waits for their `/healthz` and `/readyz`, and
starts one bill-run worker: a small loop process running `recur bill-run` every
RECUR_BILL_RUN_INTERVAL_SECONDS. Every process is detached in a process group of its own (so a
Ctrl-C in the terminal that ran `up` reaches none of them, and stopping one stops what it
started), shares one generated RECUR_INTERNAL_TOKEN and one RECUR_SERVICE_URLS (every
instance of each service, so a service's calls to another move on when one instance dies), and
logs to a file in the state directory. The state file there
(`cluster.json`: pids, ports, URLs, logs) is what `down` reads to stop them all.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from recur.kit.db import is_sqlite
from recur.settings import SERVICE_NAMES, Settings

STATE_FILE = "cluster.json"
GATEWAYS = 2


class ClusterError(Exception):
    """Why `up` or `down` could not do its work, for the user."""


@dataclass
class ClusterProcess:
    name: str  # "customers-1", "gateway-2", "bill-run"
    role: str  # a service's name, "gateway" or "bill-run"
    pid: int
    port: int | None
    url: str | None
    log: str
    started: str | None  # the kernel's start time of the pid, to tell a reused pid apart


def state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def recur_command() -> list[str]:
    """How to run the `recur` command with this interpreter's installation."""
    script = Path(sys.executable).with_name("recur")
    if script.exists():
        return [str(script)]
    found = shutil.which("recur")
    if found:
        return [found]
    return [sys.executable, "-c", "from recur.cli import main; main()"]


def _start_time(pid: int) -> str | None:
    """The process's start time (Linux /proc), or None where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _alive(pid: int, started: str | None) -> bool:
    """Whether `pid` is still the process we started and not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process now: ours is gone
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: the signal answered
    fields = stat.rpartition(")")[2].split()
    if fields[0] in ("Z", "X"):
        return False
    return started is None or fields[19] == started


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """`count` distinct ports the kernel says are free now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 (http://127.0.0.1)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def read_state(state_dir: Path) -> dict[str, object] | None:
    path = state_path(state_dir)
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ClusterError(f"{path} is not a cluster state file: {error}") from error
    return state if isinstance(state, dict) else None


def _processes(state: dict[str, object]) -> list[ClusterProcess]:
    raw = state.get("processes", [])
    assert isinstance(raw, list)
    return [ClusterProcess(**entry) for entry in raw]


class _Starter:
    """The processes `up` has started so far, and the state file that lists them."""

    def __init__(self, state_dir: Path, env: dict[str, str]):
        self.state_dir = state_dir
        self.env = env
        self.started: list[ClusterProcess] = []
        self._popens: dict[int, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, role: str, args: list[str], port: int | None) -> ClusterProcess:
        log_path = (self.state_dir / f"{name}.log").resolve()
        with log_path.open("ab") as log:
            popen = subprocess.Popen(  # noqa: S603 (our own command, no shell)
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # a session and process group of its own
            )
        url = f"http://127.0.0.1:{port}" if port is not None else None
        process = ClusterProcess(
            name, role, popen.pid, port, url, str(log_path), _start_time(popen.pid)
        )
        self.started.append(process)
        self._popens[popen.pid] = popen
        return process

    def reap(self) -> None:
        for popen in self._popens.values():
            popen.poll()

    def write(self, status: str, gateways: list[str]) -> None:
        state = {
            "status": status,
            "gateways": gateways,
            "pids": [p.pid for p in self.started],
            "processes": [asdict(p) for p in self.started],
        }
        path = state_path(self.state_dir)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(path)

    def check_running(self) -> None:
        """Raise, with the tail of its log, if a started process has exited."""
        for process in self.started:
            popen = self._popens[process.pid]
            code = popen.poll()
            if code is not None:
                raise ClusterError(
                    f"{process.name} (pid {process.pid}) exited with status {code} during "
                    f"start-up; the end of {process.log}:\n{_tail(Path(process.log))}"
                )

    def wait_healthy(self, urls: list[tuple[ClusterProcess, str]], deadline: float) -> None:
        waiting = list(urls)
        while waiting:
            self.check_running()
            waiting = [(p, url) for p, url in waiting if not _answers(url)]
            if not waiting:
                return
            if time.monotonic() > deadline:
                names = ", ".join(f"{p.name} ({url})" for p, url in waiting)
                raise ClusterError(f"not healthy in time: {names}")
            time.sleep(0.2)


def up(
    settings: Settings,
    instances: int,
    state_dir: Path,
    base_port: int | None = None,
    timeout_seconds: float = 60.0,
    echo: Callable[[str], None] = print,
) -> list[str]:
    """Start the topology; return the gateways' URLs. Raises ClusterError, having stopped
    whatever it started, when it cannot."""
    if is_sqlite(settings.database_url):
        raise ClusterError(
            "a cluster needs PostgreSQL: its processes share one database, and SQLite lets one "
            "writer in at a time. Set RECUR_DATABASE_URL=postgresql+asyncpg://..."
        )
    existing = read_state(state_dir)
    if existing is not None:
        if any(_alive(p.pid, p.started) for p in _processes(existing)):
            raise ClusterError(
                f"a cluster is already up (state in {state_path(state_dir)}): "
                "run `recur cluster down` first"
            )
        state_path(state_dir).unlink()  # left by a cluster whose processes are all gone

    count = instances * len(SERVICE_NAMES) + GATEWAYS
    if base_port is None:
        ports = _free_ports(count)
    else:
        ports = list(range(base_port, base_port + count))
        if ports[-1] > 65535:
            raise ClusterError(f"--base-port {base_port} leaves too few ports for {count}")
        taken = [port for port in ports if not _port_free(port)]
        if taken:
            raise ClusterError(
                f"ports {', '.join(map(str, taken))} are in use: choose another --base-port"
            )
    gateway_ports, service_ports = ports[:GATEWAYS], ports[GATEWAYS:]
    instance_ports = {
        name: service_ports[i * instances : (i + 1) * instances]
        for i, name in enumerate(SERVICE_NAMES)
    }

    state_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["RECUR_INTERNAL_TOKEN"] = secrets.token_hex(24)
    # Every instance of every service: `customers=http://127.0.0.1:P1,http://127.0.0.1:P2,...`,
    # the form the gateways' --upstream takes too.
    upstreams = [
        f"{name}=" + ",".join(f"http://127.0.0.1:{port}" for port in ports)
        for name, ports in instance_ports.items()
    ]
    env["RECUR_SERVICE_URLS"] = ",".join(upstreams)
    env.pop("RECUR_GATEWAY_UPSTREAMS", None)  # the gateways are told every instance
    recur = recur_command()

    migrate_log = state_dir / "migrate.log"
    with migrate_log.open("wb") as log:
        migrated = subprocess.run(  # noqa: S603 (our own command, no shell)
            [*recur, "migrate"], stdout=log, stderr=subprocess.STDOUT, env=env, check=False
        )
    if migrated.returncode != 0:
        raise ClusterError(
            f"`recur migrate` failed; the end of {migrate_log}:\n{_tail(migrate_log)}"
        )

    starter = _Starter(state_dir, env)
    deadline = time.monotonic() + timeout_seconds
    try:
        services = [
            starter.spawn(
                f"{name}-{i + 1}",
                name,
                [*recur, "serve", "--service", name, "--host", "127.0.0.1", "--port", str(port)],
                port,
            )
            for name, ports in instance_ports.items()
            for i, port in enumerate(ports)
        ]
        starter.write("starting", [])
        starter.wait_healthy([(p, f"{p.url}/healthz") for p in services], deadline)

        upstream_args = [arg for upstream in upstreams for arg in ("--upstream", upstream)]
        gateways = [
            starter.spawn(
                f"gateway-{i + 1}",
                "gateway",
                [*recur, "gateway", "--host", "127.0.0.1", "--port", str(port), *upstream_args],
                port,
            )
            for i, port in enumerate(gateway_ports)
        ]
        starter.spawn(
            "bill-run",
            "bill-run",
            [sys.executable, "-m", "recur.cluster", "bill-run-loop", *recur],
            None,
        )
        starter.write("starting", [])
        starter.wait_healthy(
            [(p, f"{p.url}/{probe}") for p in gateways for probe in ("healthz", "readyz")],
            deadline,
        )
        starter.check_running()
        gateway_urls = [p.url for p in gateways if p.url]
        starter.write("up", gateway_urls)
    except BaseException:
        _stop(starter.started, grace_seconds=5.0)
        starter.reap()
        with contextlib.suppress(FileNotFoundError):
            state_path(state_dir).unlink()
        raise
    echo(f"{len(services)} service instances, {len(gateways)} gateways and a bill-run worker up")
    return gateway_urls


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _stop(processes: list[ClusterProcess], grace_seconds: float) -> list[ClusterProcess]:
    """SIGTERM every process's group, then SIGKILL the groups still there after the grace
    period. Returns the processes that had to be killed."""
    signalled = [p for p in processes if _alive(p.pid, p.started)]
    for process in signalled:
        _signal_group(process.pid, signal.SIGTERM)
    running = list(signalled)
    deadline = time.monotonic() + grace_seconds
    while running and time.monotonic() < deadline:
        time.sleep(0.1)
        running = [p for p in running if _alive(p.pid, p.started)]
    for process in running:
        _signal_group(process.pid, signal.SIGKILL)
    # The groups of leaders that exited on SIGTERM may hold a straggler (a bill run the loop
    # started): they get the SIGKILL too, but only while the leader is gone, never a reused pid.
    for process in signalled:
        if process not in running:
            _signal_group(process.pid, signal.SIGKILL)
    end = time.monotonic() + 5.0
    while any(_alive(p.pid, p.started) for p in running) and time.monotonic() < end:
        time.sleep(0.05)
    return running


def down(state_dir: Path, grace_seconds: float = 10.0, echo: Callable[[str], None] = print) -> None:
    """Stop every process of the cluster in `state_dir` and remove its state file."""
    state = read_state(state_dir)
    if state is None:
        raise ClusterError(f"no cluster state in {state_path(state_dir)}: nothing is up there")
    processes = _processes(state)
    killed = _stop(processes, grace_seconds)
    for process in killed:
        echo(f"{process.name} (pid {process.pid}) ignored SIGTERM and was killed")
    state_path(state_dir).unlink()
    echo(f"stopped {len(processes)} processes")


def bill_run_loop(recur: list[str]) -> None:
    """The cluster's bill-run worker: `recur bill-run` now and every
    RECUR_BILL_RUN_INTERVAL_SECONDS after the previous one finished, until stopped."""
    interval = Settings().bill_run_interval_seconds
    while True:
        subprocess.run([*recur, "bill-run"], check=False)  # noqa: S603 (our own command)
        time.sleep(interval)


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "bill-run-loop":
        sys.exit("usage: python -m recur.cluster bill-run-loop RECUR_COMMAND...")
    bill_run_loop(sys.argv[2:])
