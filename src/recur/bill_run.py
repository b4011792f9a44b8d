"""The bill run in worker processes, for `recur bill-run --workers N` and `recur bench bill-run`.

The bill run is CPU-bound Python, so one process renews only so fast. Each worker is its own
process running `billing.run`, which claims batches with SKIP LOCKED and a lease: workers never
take the same subscription, nor do several `recur bill-run` commands running at once. Workers
are spawned, not forked, so none inherits this process's memory or database connections.

Each worker has a pipe of its own to this process, for a message after every batch and one at
the end: a worker killed halfway through a message damages no other worker's pipe, and the
pipe's end of file says it is gone. A worker finding its pipe closed when it reports a batch
(this process died, or Ctrl-C closed the pipes) stops there, between batches. A worker killed
mid-batch leaves what it had claimed to the next bill run once the claims' lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import resource
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from recur.kit.logs import configure_logging
from recur.runtime import build_runtime
from recur.settings import Settings
from recur.subscriptions import billing
from recur.subscriptions.billing import BillRunResult

log = logging.getLogger("recur.bill_run")


@dataclass
class WorkersResult:
    result: BillRunResult  # the workers' results added up
    peak_memory_mib: float  # the largest of the workers'
    failures: list[str] = field(default_factory=list)  # workers that raised or died: why


def peak_memory_mib() -> float:
    """This process's peak resident memory (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


async def _bill(
    settings: Settings, now: datetime, batch_size: int | None, report: Connection
) -> BillRunResult:
    rt = build_runtime(settings)
    try:
        return await billing.run(
            rt, now=now, batch_size=batch_size, on_progress=lambda n: report.send(("batch", n))
        )
    finally:
        await rt.close()


def _work(settings: Settings, now: datetime, batch_size: int | None, report: Connection) -> None:
    """A worker process: bill what is due by `now`, report on `report`."""
    configure_logging(settings.log_level, settings.log_format)
    message: tuple[str, object]
    try:
        result = asyncio.run(_bill(settings, now, batch_size, report))
        message = ("done", (result, peak_memory_mib()))
    except BrokenPipeError:
        return  # the parent is gone: stop after the batch just finished
    except Exception:
        message = ("failed", traceback.format_exc())
    with contextlib.suppress(BrokenPipeError):
        report.send(message)


def run_workers(
    settings: Settings,
    *,
    now: datetime,
    workers: int,
    batch_size: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> WorkersResult:
    """Bill everything due by `now` with `workers` processes; `on_progress` hears the number of
    subscriptions of each batch a worker finishes."""
    context = multiprocessing.get_context("spawn")
    processes: dict[Connection, BaseProcess] = {}
    try:
        # Ctrl-C reaches every process of the terminal, and this one alone answers it: the
        # workers start with it ignored (an ignored signal stays ignored across exec).
        answer_interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for number in range(workers):
                reader, writer = context.Pipe(duplex=False)
                process: BaseProcess = context.Process(
                    target=_work,
                    args=(settings, now, batch_size, writer),
                    name=f"recur-bill-run-{number + 1}",
                    daemon=True,
                )
                process.start()
                writer.close()  # the worker holds the only writing end: its exit is our EOF
                processes[reader] = process
        finally:
            signal.signal(signal.SIGINT, answer_interrupt)
        return _collect(processes, on_progress)
    except KeyboardInterrupt:
        # Stop where the batches under way end rather than halfway through them: with the
        # pipes closed, each worker finds its own broken when it reports its batch.
        log.warning("stopping once the batches under way are done (Ctrl-C again: at once)")
        for reader in processes:
            reader.close()
        for process in processes.values():
            process.join()
        raise
    finally:
        # Still running only after an error here or a second Ctrl-C. A worker stopped anywhere
        # loses and doubles nothing: what it had claimed waits for its lease to run out.
        for process in processes.values():
            if process.is_alive():
                process.terminate()
            process.join()
        for reader in processes:
            reader.close()


def _collect(
    processes: dict[Connection, BaseProcess], on_progress: Callable[[int], None] | None
) -> WorkersResult:
    total = WorkersResult(BillRunResult(), 0.0)
    open_readers = list(processes)
    answered: set[Connection] = set()
    while open_readers:
        for reader in wait(open_readers):
            assert isinstance(reader, Connection)
            try:
                kind, value = reader.recv()
            except (EOFError, OSError):
                open_readers.remove(reader)
                if reader not in answered:
                    process = processes[reader]
                    process.join()
                    total.failures.append(
                        f"{process.name} (pid {process.pid}) died, exit code {process.exitcode}"
                    )
                continue
            if kind == "batch":
                if on_progress is not None:
                    on_progress(value)
            elif kind == "done":
                answered.add(reader)
                result, memory = value
                for count in fields(BillRunResult):
                    added = getattr(total.result, count.name) + getattr(result, count.name)
                    setattr(total.result, count.name, added)
                total.peak_memory_mib = max(total.peak_memory_mib, memory)
            else:
                answered.add(reader)
                total.failures.append(f"{processes[reader].name} failed:\n{value}")
    return total
