"""Running the demo's worker, and the watcher thread that stops it when done.

The watcher also shows the progress and reschedules each failed job to run at
once, so retries need not wait out their back-off.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import psycopg

from graphile_worker.demo.database import connect, count_jobs
from graphile_worker.demo.progress import Progress
from graphile_worker.demo.state import DemoState
from graphile_worker.demo.tasks import TASKS
from graphile_worker.options import WorkerOptions
from graphile_worker.worker import Worker
from graphile_worker.worker_async import AsyncWorker

POLL_INTERVAL: Final = 0.25  # seconds; short, so rescheduled retries start at once
SHUTDOWN_GRACE: Final = 2.0  # seconds
MONITOR_INTERVAL: Final = 0.1  # seconds between looks at the jobs table
TIMEOUT: Final = 60.0  # seconds the jobs may take before the demo gives up

logger = logging.getLogger("graphile_worker.demo")


def _pending(connection: psycopg.Connection[Any]) -> int:
    """Jobs still to run: not failed for good, or locked by a worker."""
    return count_jobs(connection, "attempts < max_attempts or locked_at is not null")


@dataclass
class Watch:
    """How watching the jobs ended."""

    complete: bool = False
    timed_out: bool = False
    error: BaseException | None = None


def watch(
    dsn: str,
    state: DemoState,
    progress: Progress,
    stop: Callable[[], None],
    done: threading.Event,
    result: Watch,
) -> None:
    """Show progress, reschedule failed jobs to now, stop the worker when done.

    Runs in a thread of its own beside the worker until ``done`` is set.
    """
    try:
        with connect(dsn) as (connection, utils):
            while not state.started.wait(MONITOR_INTERVAL):
                if done.is_set():
                    return

            while not done.wait(MONITOR_INTERVAL):
                retries = state.take_retries()
                if retries:
                    utils.reschedule_jobs(retries, run_at=datetime.now(UTC))

                pending = _pending(connection)
                elapsed = time.monotonic() - state.started_at
                progress.update(state.finished(), state.retries(), elapsed)
                if pending == 0:
                    state.finished_at = time.monotonic()
                    result.complete = True
                    break

                if elapsed > TIMEOUT:
                    state.finished_at = time.monotonic()
                    result.timed_out = True
                    break

    except Exception as exc:
        result.error = exc
        logger.exception("The demo's watcher failed")

    # Stop the worker, but only once it runs: before, stop() is not thread-safe.
    while not (state.started.wait(MONITOR_INTERVAL) or done.is_set()):
        pass

    if not done.is_set():
        stop()


def _options(dsn: str, jobs: int, state: DemoState) -> WorkerOptions:
    options = WorkerOptions(
        dsn=dsn,
        concurrency=jobs,
        poll_interval=POLL_INTERVAL,
        shutdown_grace=SHUTDOWN_GRACE,
        tasks=TASKS,
    )
    options.add_extension(state)
    options.events.on("pool:create", state.on_start)
    options.events.on("job:success", state.on_success)
    options.events.on("job:error", state.on_error)
    return options


def run_worker(
    dsn: str, jobs: int, state: DemoState, progress: Progress, *, threaded: bool
) -> Watch:
    """Run the worker in this thread and a watcher beside it, until all is done."""
    options = _options(dsn, jobs, state)
    done = threading.Event()
    result = Watch()

    def start_watcher(stop: Callable[[], None]) -> threading.Thread:
        watcher = threading.Thread(
            target=watch,
            args=(dsn, state, progress, stop, done, result),
            name="demo-watcher",
            daemon=True,
        )
        watcher.start()
        return watcher

    if threaded:
        worker = Worker(options)
        watcher = start_watcher(worker.stop)
        try:
            worker.run()
        finally:
            done.set()
            watcher.join()
            worker.close()
    else:

        async def serve() -> None:
            async_worker = AsyncWorker(options)
            watcher = start_watcher(async_worker.stop)
            try:
                await async_worker.run()
            finally:
                done.set()
                await asyncio.to_thread(watcher.join)
                await async_worker.close()

        asyncio.run(serve())

    if not state.finished_at:
        state.finished_at = time.monotonic()

    return result


__all__ = ["POLL_INTERVAL", "TIMEOUT", "Watch", "run_worker"]
