"""What only the AsyncWorker does: coroutines, cancellation, its own resources.

The threaded twin has no counterpart for these, so they are not generated from
an ``_async`` source.
"""

from __future__ import annotations

import gc
import threading
import time
import warnings
from typing import Any

import anyio
import anyio.to_thread
import psycopg
import pytest

from graphile_worker import (
    AsyncWorker,
    AsyncWorkerContext,
    AsyncWorkerUtils,
    WorkerOptions,
    task,
)
from graphile_worker import worker_async as worker_module

GRACE = 0.3  # seconds of shutdown grace
ABORT_WAIT = 0.3  # seconds aborted handlers get before their job is released
WAIT = 10.0  # seconds, the most a condition is waited for
HOLD = 8.0  # seconds a stubborn handler holds on when nobody releases it
RETURN_LIMIT = 3.0  # seconds after the release within which run() must return
SHUTDOWN = "Job aborted by worker shutdown"


def locked_by(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        return connection.execute(
            "select attempts, last_error, locked_by from graphile_worker._private_jobs"
        ).fetchall()


@pytest.mark.anyio
async def test_a_finished_worker_leaves_no_unclosed_resources(db_dsn: str) -> None:
    @task("hello")
    async def hello(payload: Any, ctx: AsyncWorkerContext) -> None:
        pass

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        await utils.add_raw_job("hello", {})

    worker = AsyncWorker(WorkerOptions(dsn=db_dsn, tasks=[hello]))
    async with worker:
        await worker.run_once()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del worker
        gc.collect()

    assert [str(warning.message) for warning in caught] == []


@pytest.mark.anyio
async def test_a_coroutine_that_ignores_the_abort_is_cancelled(
    db_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "ABORT_WAIT", ABORT_WAIT)
    cancelled: list[bool] = []
    started = anyio.Event()

    @task("stubborn")
    async def stubborn(payload: Any, ctx: AsyncWorkerContext) -> None:
        started.set()
        try:
            await anyio.sleep(HOLD)  # never looks at ctx.abort_signal
        except anyio.get_cancelled_exc_class():
            cancelled.append(ctx.aborted)
            raise

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        await utils.add_raw_job("stubborn", {})

    worker = AsyncWorker(
        WorkerOptions(
            dsn=db_dsn, tasks=[stubborn], shutdown_grace=GRACE, handle_signals=False
        )
    )
    with anyio.fail_after(WAIT):
        async with worker, anyio.create_task_group() as group:
            group.start_soon(worker.run)
            await started.wait()
            worker.stop()

    assert cancelled == [True]  # the abort signal was set before the cancel
    assert locked_by(db_dsn) == [(1, SHUTDOWN, None)]


@pytest.mark.timeout(60)
@pytest.mark.anyio
async def test_run_returns_when_a_shielded_handler_ignores_the_abort(
    db_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "ABORT_WAIT", ABORT_WAIT)
    started = threading.Event()
    release = threading.Event()
    stopped = threading.Event()

    def hold() -> None:
        started.set()
        release.wait(HOLD)

    @task("stubborn")
    async def stubborn(payload: Any, ctx: AsyncWorkerContext) -> None:
        await anyio.to_thread.run_sync(hold)  # cannot be cancelled

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        await utils.add_raw_job("stubborn", {})

    worker = AsyncWorker(
        WorkerOptions(
            dsn=db_dsn, tasks=[stubborn], shutdown_grace=GRACE, handle_signals=False
        )
    )
    worker.options.events.on("stop", lambda details: stopped.set())
    released_in_time = returned_in_time = False
    try:
        async with worker, anyio.create_task_group() as group:
            group.start_soon(worker.run)
            await anyio.to_thread.run_sync(started.wait, WAIT)
            worker.stop()

            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                if locked_by(db_dsn) == [(1, SHUTDOWN, None)]:
                    released_in_time = True
                    break

                await anyio.sleep(0.05)

            returned_in_time = await anyio.to_thread.run_sync(
                stopped.wait, RETURN_LIMIT
            )
            release.set()
    finally:
        release.set()

    assert released_in_time
    assert returned_in_time


@pytest.mark.anyio
async def test_a_handler_raising_cancelled_error_fails_only_its_job(
    db_dsn: str,
) -> None:
    import asyncio

    ran: list[str] = []

    @task("cancels")
    async def cancels(payload: Any, ctx: AsyncWorkerContext) -> None:
        raise asyncio.CancelledError

    @task("fine")
    async def fine(payload: Any, ctx: AsyncWorkerContext) -> None:
        ran.append("fine")

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        for _ in range(3):
            await utils.add_raw_job("cancels", {})
        for _ in range(5):
            await utils.add_raw_job("fine", {})

    settings = WorkerOptions(
        dsn=db_dsn, tasks=[cancels, fine], concurrency=2, handle_signals=False
    )
    with anyio.fail_after(WAIT):
        async with AsyncWorker(settings) as worker:
            await worker.run_once()

    assert ran == ["fine"] * 5
    assert sorted(locked_by(db_dsn)) == [(1, "CancelledError", None)] * 3
