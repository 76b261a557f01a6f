"""AsyncWorker against a real, freshly migrated database.

Jobs are added with SQL of our own, with the utilities, and read back with SQL
of our own. Expected values come from graphile-worker's documented behaviour
(lower priority first, then earlier ``run_at``; one job at a time per named
queue; a failed attempt waits ``exp(min(attempts, 10))`` seconds; a job whose
attempts reach ``max_attempts`` stays for good) and from plain arithmetic.

Handlers record what they saw in plain lists; the threaded twin runs them on
several threads, so anything more than an ``append`` takes a lock.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, ClassVar, LiteralString

import msgspec
import psycopg
import pytest
from psycopg import AsyncConnection

from graphile_worker import (
    AsyncPsycopgDatabase,
    AsyncWorker,
    AsyncWorkerContext,
    AsyncWorkerUtils,
    Fail,
    JobResult,
    JobSpec,
    Skip,
    WorkerOptions,
    task,
)
from graphile_worker import worker_async as worker_module
from graphile_worker._acompat import AEvent, ATaskGroup, aevent_wait, asleep
from graphile_worker._sql import queries
from graphile_worker.database_async import Params, Row
from graphile_worker.options import FlagSource
from graphile_worker.task import TaskHandler
from tests.wrapped_async import AsyncWrappedDatabase

WAIT = 10.0  # seconds: the most any condition is waited for before failing
POLL = 0.01  # seconds between checks of a condition
NOTIFY_LIMIT = 2.0  # seconds: a NOTIFY must wake an idle worker within this
GRACE = 0.3  # seconds of shutdown grace in the abort tests
ABORT_WAIT = 0.3  # seconds aborted handlers get before release, in those tests
SHUTDOWN = "Job aborted by worker shutdown"
FIRST_RETRY = timedelta(seconds=math.exp(1))  # backoff after attempt 1
MICROSECOND = timedelta(microseconds=1)  # intervals are rounded to these
JOB_FIELDS = ("attempts", "max_attempts", "last_error", "locked_by", "run_at")


class Hello(msgspec.Struct):
    """A typed payload, for ``@task`` functions."""

    IDENTIFIER: ClassVar[str] = "hello"

    n: int


class Item(msgspec.Struct):
    """One item of the ``numbers`` batch task."""

    IDENTIFIER: ClassVar[str] = "numbers"

    n: int


class Recorder:
    """Per-test state that Struct tasks reach through ``ctx.get_ext``."""

    def __init__(self) -> None:
        self.seen: list[Any] = []


class Typed(msgspec.Struct):
    """A Struct task: the payload decodes into it and ``run`` is called."""

    IDENTIFIER: ClassVar[str] = "typed"

    n: int

    async def run(self, ctx: AsyncWorkerContext) -> None:
        recorder = ctx.get_ext(Recorder)
        assert recorder is not None
        recorder.seen.append(self.n)


class Child(msgspec.Struct):
    """A Struct task that a handler adds."""

    IDENTIFIER: ClassVar[str] = "child"

    n: int

    async def run(self, ctx: AsyncWorkerContext) -> None:
        recorder = ctx.get_ext(Recorder)
        assert recorder is not None
        recorder.seen.append(("child", self.n, ctx.job.id, ctx.job.queue_name))


class Greeting(msgspec.Struct):
    """An extension value."""

    text: str


class Unused(msgspec.Struct):
    """An extension type nobody registers."""

    text: str


def options(dsn: str, *tasks: object, **settings: Any) -> WorkerOptions:
    """Worker options for a test: its tasks, no signal handlers, ``settings``."""
    settings.setdefault("handle_signals", False)
    return WorkerOptions(dsn=dsn, tasks=tasks, **settings)


async def query(dsn: str, sql: LiteralString, params: Params = None) -> list[Row]:
    """Run one statement on a connection of its own and return its rows."""
    async with await AsyncConnection.connect(dsn, autocommit=True) as connection:
        cursor = await connection.execute(sql, params)
        return await cursor.fetchall() if cursor.description else []


async def db_now(dsn: str) -> datetime:
    rows = await query(dsn, "select now()")
    value: datetime = rows[0][0]
    return value


async def job_ids(dsn: str) -> list[int]:
    rows = await query(dsn, "select id from graphile_worker._private_jobs order by id")
    return [row[0] for row in rows]


async def job_row(dsn: str, job_id: int) -> dict[str, Any] | None:
    """Some columns of one job, read from the table; None when it is gone."""
    rows = await query(
        dsn,
        "select attempts, max_attempts, last_error, locked_by, run_at,"
        " locked_at, is_available, payload::text"
        " from graphile_worker._private_jobs where id = %s",
        [job_id],
    )
    if not rows:
        return None

    row = dict(zip(JOB_FIELDS, rows[0][:5], strict=True))
    row["locked_at"], row["is_available"] = rows[0][5], rows[0][6]
    row["payload"] = json.loads(rows[0][7])
    return row


def job_row_now(dsn: str, job_id: int) -> tuple[Any, ...] | None:
    """attempts, max_attempts, last_error, locked_by of one job, read at once.

    Blocking on purpose: event listeners are plain functions in both flavours.
    """
    with psycopg.connect(dsn, autocommit=True) as connection:
        return connection.execute(
            "select attempts, max_attempts, last_error, locked_by"
            " from graphile_worker._private_jobs where id = %s",
            [job_id],
        ).fetchone()


async def wait_for(condition: Callable[[], object], seconds: float = WAIT) -> bool:
    """Check ``condition`` until it holds or ``seconds`` pass; say which."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() >= deadline:
            return False

        await asleep(POLL)

    return True


async def run_once(settings: WorkerOptions) -> None:
    """Run a new worker with ``settings`` until no job is runnable."""
    async with AsyncWorker(settings) as worker:
        await worker.run_once()


@asynccontextmanager
async def running(worker: AsyncWorker) -> AsyncIterator[None]:
    """Run ``worker.run()`` beside the block; stop it and wait for it after."""
    async with ATaskGroup() as group:
        group.start_soon(worker.run, name="test-worker-run")
        try:
            yield
        finally:
            worker.stop()


def listening(worker: AsyncWorker) -> threading.Event:
    """An event set once the worker's LISTEN connection is up."""
    ready = threading.Event()
    worker.options.events.on("pool:listen:success", lambda details: ready.set())
    return ready


# -- adding and running --------------------------------------------------------


@pytest.mark.anyio
async def test_jobs_added_by_sql_run_once_each(db_dsn: str) -> None:
    ran: list[tuple[int, int]] = []

    @task("hello")
    async def hello(payload: Hello, ctx: AsyncWorkerContext) -> None:
        ran.append((ctx.job.id, payload.n))

    await query(
        db_dsn,
        "select graphile_worker.add_job('hello', json_build_object('n', n))"
        " from generate_series(1, 40) as n",
    )
    added = await job_ids(db_dsn)

    async with AsyncWorker(options(db_dsn, hello, concurrency=10)) as worker:
        await worker.run_once()

    assert sorted(ran) == list(zip(added, range(1, 41), strict=True))
    assert await job_ids(db_dsn) == []


@pytest.mark.anyio
async def test_jobs_added_by_worker_utils_run_once_each(db_dsn: str) -> None:
    recorder = Recorder()
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        jobs = [await utils.add_job(Typed(n)) for n in range(5)]
        jobs += await utils.add_jobs([Typed(n) for n in range(5, 25)])
        jobs.append(await utils.add_raw_job("typed", {"n": 25}))

    worker = AsyncWorker(options(db_dsn, Typed).add_extension(recorder))
    async with worker:
        await worker.run_once()

    assert len({job.id for job in jobs}) == 26
    assert sorted(recorder.seen) == list(range(26))
    assert await job_ids(db_dsn) == []


@pytest.mark.anyio
async def test_priority_then_run_at_order_with_concurrency_one(db_dsn: str) -> None:
    ran: list[int] = []

    @task("hello")
    async def hello(payload: Hello, ctx: AsyncWorkerContext) -> None:
        ran.append(payload.n)

    # (priority, seconds before now): lower priority first, then older run_at.
    specs = [(0, 10), (5, 30), (-3, 5), (0, 20), (-3, 40), (5, 1), (1, 0), (0, 15)]
    now = await db_now(db_dsn)
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        for n, (priority, ago) in enumerate(specs):
            spec = JobSpec(priority=priority, run_at=now - timedelta(seconds=ago))
            await utils.add_job(Hello(n), spec)

    async with AsyncWorker(options(db_dsn, hello, concurrency=1)) as worker:
        await worker.run_once()

    expected = sorted(range(len(specs)), key=lambda n: (specs[n][0], -specs[n][1]))
    assert expected == [4, 2, 3, 7, 0, 6, 1, 5]
    assert ran == expected


class Overlap:
    """Counts the jobs running at once, in one queue and overall."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: dict[str | None, int] = {}
        self.most: dict[str | None, int] = {}
        self.order: list[tuple[str | None, int, str]] = []

    def enter(self, queue: str | None, n: int, worker_id: str) -> None:
        with self.lock:
            for key in {queue, "*"}:
                self.active[key] = self.active.get(key, 0) + 1
                self.most[key] = max(self.most.get(key, 0), self.active[key])

            self.order.append((queue, n, worker_id))

    def leave(self, queue: str | None) -> None:
        with self.lock:
            for key in {queue, "*"}:
                self.active[key] -= 1


def overlap_task(overlap: Overlap, seconds: float) -> object:
    @task("hello")
    async def hello(payload: Hello, ctx: AsyncWorkerContext) -> None:
        queue = ctx.job.queue_name
        overlap.enter(queue, payload.n, ctx.worker_id)
        try:
            await asleep(seconds)
        finally:
            overlap.leave(queue)

    return hello


@pytest.mark.anyio
async def test_a_named_queue_runs_one_job_at_a_time(db_dsn: str) -> None:
    overlap = Overlap()
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        for n in range(12):
            await utils.add_job(Hello(n), JobSpec(queue_name="serial"))

        await utils.add_jobs([Hello(100 + n) for n in range(8)])

    hello = overlap_task(overlap, 0.03)
    async with AsyncWorker(options(db_dsn, hello, concurrency=10)) as worker:
        await worker.run_once()

    assert overlap.most["serial"] == 1
    assert overlap.most["*"] > 1  # the worker did run jobs side by side
    in_queue = [n for queue, n, _ in overlap.order if queue == "serial"]
    assert in_queue == list(range(12))  # in the order they were added
    assert len(overlap.order) == 20
    assert await job_ids(db_dsn) == []


@pytest.mark.anyio
async def test_a_named_queue_runs_one_job_at_a_time_across_two_workers(
    db_dsn: str,
) -> None:
    # Each worker refuses the other's flag, so both must take part, and each
    # sits idle, polling, while the other holds the queue.
    overlap = Overlap()
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        for n in range(20):
            spec = JobSpec(queue_name="serial", flags=["odd" if n % 2 else "even"])
            await utils.add_job(Hello(n), spec)

    hello = overlap_task(overlap, 0.03)
    first = AsyncWorker(
        options(db_dsn, hello, poll_interval=0.01, forbidden_flags=["odd"])
    )
    second = AsyncWorker(
        options(db_dsn, hello, poll_interval=0.01, forbidden_flags=["even"])
    )
    async with first, second, running(first), running(second):
        assert await wait_for(lambda: len(overlap.order) == 20)

    assert overlap.most["serial"] == 1
    by_worker = {
        worker.worker_id: sorted(
            n for _, n, by in overlap.order if by == worker.worker_id
        )
        for worker in (first, second)
    }
    assert by_worker == {
        first.worker_id: list(range(0, 20, 2)),
        second.worker_id: list(range(1, 20, 2)),
    }
    assert await job_ids(db_dsn) == []


@pytest.mark.anyio
async def test_concurrency_one_keeps_run_at_order_through_a_queue(
    db_dsn: str,
) -> None:
    ran: list[str] = []

    @task("hello")
    async def hello(payload: Any, ctx: AsyncWorkerContext) -> None:
        ran.append(payload["name"])

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        await utils.add_raw_job("hello", {"name": "A"}, JobSpec(queue_name="q"))
        await utils.add_raw_job("hello", {"name": "B"}, JobSpec(queue_name="q"))
        await utils.add_raw_job("hello", {"name": "C"})

    inner = AsyncPsycopgDatabase.from_dsn(db_dsn)
    await inner.open()
    try:
        complete_claimed = queries("graphile_worker").complete_claimed

        async def slow_completions(query: str, params: Params) -> None:
            # A slow network on the completion write only, which widens the
            # window between a job's end and the write that unlocks its queue.
            if query == complete_claimed:
                await asleep(0.2)

        database = AsyncWrappedDatabase(inner, slow_completions)
        # Without a local queue, as Node runs by default: claiming ahead would
        # take C while the write that unlocks q is still in flight.
        settings = options(db_dsn, hello, concurrency=1, local_queue_size=0)
        async with AsyncWorker(settings, database=database) as worker:
            await worker.run_once()
    finally:
        await inner.close()

    # One job at a time, as Node runs them: A, then B (due before C and free
    # once A is complete), then C.
    assert ran == ["A", "B", "C"]


# -- failures ------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_failed_job_is_retried_after_exp_1_seconds(db_dsn: str) -> None:
    calls: list[int] = []

    @task("flaky")
    async def flaky(payload: Any, ctx: AsyncWorkerContext) -> None:
        calls.append(ctx.job.attempts)
        raise RuntimeError(f"boom on attempt {ctx.job.attempts}")

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        job = await utils.add_raw_job("flaky", {"x": 1})

    before = await db_now(db_dsn)
    async with AsyncWorker(options(db_dsn, flaky)) as worker:
        await worker.run_once()

    after = await db_now(db_dsn)
    row = await job_row(db_dsn, job.id)
    assert row is not None
    assert calls == [1]
    assert row["attempts"] == 1
    assert row["last_error"] == "boom on attempt 1"
    assert row["locked_by"] is None and row["locked_at"] is None
    assert row["is_available"] is True
    # run_at = now() at the failure + e seconds, and before <= now() <= after.
    assert before + FIRST_RETRY - MICROSECOND <= row["run_at"]
    assert row["run_at"] <= after + FIRST_RETRY + MICROSECOND


@pytest.mark.anyio
async def test_a_job_fails_for_good_after_max_attempts(db_dsn: str) -> None:
    calls: list[int] = []

    @task("doomed")
    async def doomed(payload: Any, ctx: AsyncWorkerContext) -> None:
        calls.append(ctx.job.attempts)
        raise ValueError(f"failure {len(calls)}")

    settings = options(db_dsn, doomed)
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        job = await utils.add_raw_job("doomed", {}, JobSpec(max_attempts=2))
        await run_once(settings)
        first = await job_row(db_dsn, job.id)

        await run_once(settings)  # backing off: nothing runs
        assert calls == [1]

        await utils.reschedule_jobs([job.id], run_at=await db_now(db_dsn))
        await run_once(settings)
        second = await job_row(db_dsn, job.id)

        await utils.reschedule_jobs([job.id], run_at=await db_now(db_dsn))
        await run_once(settings)  # failed for good: nothing runs

    assert first is not None and second is not None
    assert (first["attempts"], first["is_available"]) == (1, True)
    assert first["last_error"] == "failure 1"
    assert calls == [1, 2]
    assert (second["attempts"], second["max_attempts"]) == (2, 2)
    assert second["is_available"] is False
    assert second["last_error"] == "failure 2"
    assert second["locked_by"] is None
    assert await job_ids(db_dsn) == [job.id]


@pytest.mark.anyio
async def test_a_payload_that_does_not_decode_fails_only_its_job(
    db_dsn: str,
) -> None:
    recorder = Recorder()
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        wrong_type = await utils.add_raw_job(
            "typed", {"n": "two"}, JobSpec(priority=-2)
        )
        missing = await utils.add_raw_job("typed", {"m": 1}, JobSpec(priority=-1))
        good = await utils.add_jobs([Typed(1), Typed(3)])

    worker = AsyncWorker(options(db_dsn, Typed, concurrency=1).add_extension(recorder))
    async with worker:
        await worker.run_once()

    assert sorted(recorder.seen) == [1, 3]
    assert await job_ids(db_dsn) == sorted([wrong_type.id, missing.id])
    assert {job.id for job in good}.isdisjoint(await job_ids(db_dsn))
    wrong_row = await job_row(db_dsn, wrong_type.id)
    missing_row = await job_row(db_dsn, missing.id)
    assert wrong_row is not None and missing_row is not None
    assert wrong_row["attempts"] == missing_row["attempts"] == 1
    assert "$.n" in wrong_row["last_error"]  # msgspec's path to the field
    assert "`n`" in missing_row["last_error"]
    assert wrong_row["payload"] == {"n": "two"}  # kept for a fixed worker


@pytest.mark.anyio
async def test_a_batch_job_retries_only_its_failed_items(db_dsn: str) -> None:
    seen: list[list[int]] = []

    @task("numbers", batch=True)
    async def numbers(
        items: list[Item], ctx: AsyncWorkerContext
    ) -> list[Exception | None]:
        seen.append([item.n for item in items])
        first = ctx.job.attempts == 1
        return [
            RuntimeError(f"odd {item.n}") if first and item.n % 2 else None
            for item in items
        ]

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        job = await utils.add_batch_job([Item(n) for n in range(1, 6)])
        await run_once(options(db_dsn, numbers))
        retried = await job_row(db_dsn, job.id)

        await utils.reschedule_jobs([job.id], run_at=await db_now(db_dsn))
        await run_once(options(db_dsn, numbers))

    assert retried is not None
    assert retried["payload"] == [{"n": 1}, {"n": 3}, {"n": 5}]
    assert retried["attempts"] == 1
    assert retried["last_error"].startswith("3 of 5 batch items failed")
    assert "odd 1" in retried["last_error"]
    assert seen == [[1, 2, 3, 4, 5], [1, 3, 5]]
    assert await job_ids(db_dsn) == []


# -- flags, extensions, helpers ------------------------------------------------


def slow_flags() -> list[str]:
    return ["slow"]


@pytest.mark.parametrize("forbidden", [["slow"], slow_flags], ids=["list", "callable"])
@pytest.mark.anyio
async def test_forbidden_flags_leave_flagged_jobs_alone(
    db_dsn: str, forbidden: FlagSource
) -> None:
    ran: list[int] = []

    @task("hello")
    async def hello(payload: Hello, ctx: AsyncWorkerContext) -> None:
        ran.append(payload.n)

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        slow = await utils.add_job(Hello(1), JobSpec(flags=["slow"]))
        both = await utils.add_job(Hello(2), JobSpec(flags=["fast", "slow"]))
        await utils.add_job(Hello(3), JobSpec(flags=["fast"]))
        await utils.add_job(Hello(4))

    settings = options(db_dsn, hello, forbidden_flags=forbidden)
    async with AsyncWorker(settings) as worker:
        await worker.run_once()

    assert sorted(ran) == [3, 4]
    assert await job_ids(db_dsn) == sorted([slow.id, both.id])
    for job in (slow, both):
        row = await job_row(db_dsn, job.id)
        assert row is not None
        assert (row["attempts"], row["locked_by"], row["last_error"]) == (0, None, None)


@pytest.mark.anyio
async def test_extensions_reach_handlers_by_type(db_dsn: str) -> None:
    seen: list[tuple[Greeting | None, Unused | None]] = []

    @task("hello")
    async def hello(payload: Hello, ctx: AsyncWorkerContext) -> None:
        seen.append((ctx.get_ext(Greeting), ctx.get_ext(Unused)))

    settings = options(db_dsn, hello)
    settings.add_extension(Greeting("first")).add_extension(Greeting("hello"))
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        await utils.add_job(Hello(1))

    async with AsyncWorker(settings) as worker:
        await worker.run_once()

    assert seen == [(Greeting("hello"), None)]  # the later value of a type wins


@pytest.mark.anyio
async def test_a_handler_adds_a_job_that_the_worker_then_runs(db_dsn: str) -> None:
    recorder = Recorder()
    added: list[int] = []

    @task("parent")
    async def parent(payload: Hello, ctx: AsyncWorkerContext) -> None:
        child = await ctx.add_job(Child(payload.n * 10), JobSpec(queue_name="kids"))
        assert child is not None
        added.append(child.id)
        recorder.seen.append(("parent", payload.n))

    settings = options(db_dsn, parent, Child).add_extension(recorder)
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        await utils.add_raw_job("parent", {"n": 4})

    async with AsyncWorker(settings) as worker:
        await worker.run_once()

    assert recorder.seen == [("parent", 4), ("child", 40, added[0], "kids")]
    assert await job_ids(db_dsn) == []


# -- events and interceptors ---------------------------------------------------

JOB_EVENTS = ("job:start", "job:success", "job:error", "job:failed", "job:complete")


@pytest.mark.anyio
async def test_job_events_fire_for_the_right_jobs_after_the_write(
    db_dsn: str,
) -> None:
    seen: list[tuple[str, int, str | None]] = []
    rows_then: dict[tuple[str, int], tuple[Any, ...] | None] = {}

    @task("ok")
    async def ok(payload: Any, ctx: AsyncWorkerContext) -> None:
        pass

    @task("bad")
    async def bad(payload: Any, ctx: AsyncWorkerContext) -> None:
        raise RuntimeError(f"bad {payload['n']}")

    settings = options(db_dsn, ok, bad)

    def recorder(name: str) -> Callable[[Mapping[str, Any]], None]:
        def record(details: Mapping[str, Any]) -> None:
            job, error = details["job"], details.get("error")
            seen.append((name, job.id, None if error is None else str(error)))
            if name != "job:start":
                rows_then[name, job.id] = job_row_now(db_dsn, job.id)

        return record

    for name in JOB_EVENTS:
        settings.events.on(name, recorder(name))

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        good = await utils.add_raw_job("ok", {})
        retry = await utils.add_raw_job("bad", {"n": 1}, JobSpec(max_attempts=5))
        dead = await utils.add_raw_job("bad", {"n": 2}, JobSpec(max_attempts=1))

    async with AsyncWorker(settings) as worker:
        await worker.run_once()

    by_job = {
        job.id: [name for name, job_id, _ in seen if job_id == job.id]
        for job in (good, retry, dead)
    }
    assert by_job == {
        good.id: ["job:start", "job:success", "job:complete"],
        retry.id: ["job:start", "job:error", "job:complete"],
        dead.id: ["job:start", "job:error", "job:failed", "job:complete"],
    }
    assert len(seen) == 10
    errors = {(name, job_id): error for name, job_id, error in seen}
    assert errors["job:error", retry.id] == "bad 1"
    assert errors["job:failed", dead.id] == "bad 2"
    assert errors["job:success", good.id] is None
    # Each event saw the row as already written by then.
    assert rows_then["job:success", good.id] is None
    assert rows_then["job:complete", good.id] is None
    assert rows_then["job:error", retry.id] == (1, 5, "bad 1", None)
    assert rows_then["job:error", dead.id] == (1, 1, "bad 2", None)
    assert rows_then["job:failed", dead.id] == (1, 1, "bad 2", None)


@pytest.mark.anyio
async def test_a_listener_that_raises_does_not_stop_the_worker(db_dsn: str) -> None:
    ran: list[int] = []
    later: list[str] = []

    @task("hello")
    async def hello(payload: Hello, ctx: AsyncWorkerContext) -> None:
        ran.append(payload.n)

    def explode(details: Mapping[str, Any]) -> None:
        raise RuntimeError("listener failure")

    def after(name: str) -> Callable[[Mapping[str, Any]], None]:
        return lambda details: later.append(name)

    settings = options(db_dsn, hello, concurrency=2)
    for name in ("job:start", "job:success", "job:complete", "pool:create"):
        settings.events.on(name, explode)
        settings.events.on(name, after(name))

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        await utils.add_jobs([Hello(n) for n in range(6)])

    async with AsyncWorker(settings) as worker:
        await worker.run_once()

    assert sorted(ran) == list(range(6))
    assert await job_ids(db_dsn) == []
    # The listeners after the one that raised were still called.
    assert set(later) == {"job:complete", "job:start", "job:success", "pool:create"}
    assert later.count("job:success") == 6


@pytest.mark.anyio
async def test_interceptors_skip_fail_and_replace_results(db_dsn: str) -> None:
    ran: list[str] = []
    outcomes: list[tuple[str, str]] = []

    @task("kind")
    async def kind(payload: Any, ctx: AsyncWorkerContext) -> None:
        ran.append(payload["kind"])
        if payload["kind"] == "rescue":
            raise RuntimeError("handler failure")

    settings = options(db_dsn, kind, concurrency=1)

    @settings.before_job_run
    async def before(ctx: AsyncWorkerContext) -> Skip | Fail | None:
        if ctx.payload["kind"] == "skip":
            return Skip()

        if ctx.payload["kind"] == "fail":
            return Fail("x")

        return None

    @settings.after_job_run
    async def after(ctx: AsyncWorkerContext, result: JobResult) -> JobResult | None:
        outcomes.append((ctx.payload["kind"], result.outcome))
        if ctx.payload["kind"] == "rescue":
            return JobResult()

        if ctx.payload["kind"] == "veto":
            return JobResult(error=RuntimeError("vetoed"))

        return None

    names = ["skip", "fail", "rescue", "veto", "plain"]
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        jobs = {
            name: await utils.add_raw_job("kind", {"kind": name}, JobSpec(priority=p))
            for p, name in enumerate(names)
        }

    async with AsyncWorker(settings) as worker:
        await worker.run_once()

    assert ran == ["rescue", "veto", "plain"]
    assert outcomes == [
        ("skip", "success"),
        ("fail", "failure"),
        ("rescue", "failure"),
        ("veto", "success"),
        ("plain", "success"),
    ]
    assert await job_ids(db_dsn) == sorted([jobs["fail"].id, jobs["veto"].id])
    failed = await job_row(db_dsn, jobs["fail"].id)
    vetoed = await job_row(db_dsn, jobs["veto"].id)
    assert failed is not None and vetoed is not None
    assert (failed["attempts"], failed["last_error"]) == (1, "x")
    assert (vetoed["attempts"], vetoed["last_error"]) == (1, "vetoed")


# -- running, stopping ---------------------------------------------------------


@pytest.mark.anyio
async def test_run_picks_up_a_job_added_later_through_notify(db_dsn: str) -> None:
    ran: list[float] = []

    @task("hello")
    async def hello(payload: Hello, ctx: AsyncWorkerContext) -> None:
        ran.append(time.monotonic())

    worker = AsyncWorker(options(db_dsn, hello, poll_interval=30))
    ready = listening(worker)
    async with worker, running(worker):
        assert await wait_for(ready.is_set)
        await asleep(0.2)  # let the first, empty, claim pass
        added = time.monotonic()
        await query(db_dsn, "select graphile_worker.add_job('hello', '{\"n\": 1}')")
        assert await wait_for(lambda: ran, NOTIFY_LIMIT)

    assert ran[0] - added < NOTIFY_LIMIT
    assert await job_ids(db_dsn) == []


@pytest.mark.timeout(30)
@pytest.mark.anyio
async def test_stop_from_another_thread_ends_run(db_dsn: str) -> None:
    stopped: list[str] = []

    @task("hello")
    async def hello(payload: Hello, ctx: AsyncWorkerContext) -> None:
        pass

    worker = AsyncWorker(options(db_dsn, hello, poll_interval=30))
    worker.options.events.on(
        "pool:listen:success",
        lambda details: threading.Thread(target=worker.stop).start(),
    )
    worker.options.events.on("stop", lambda details: stopped.append("stop"))
    async with worker:
        await worker.run()

    assert stopped == ["stop"]


@pytest.mark.timeout(30)
@pytest.mark.anyio
async def test_stop_before_run_makes_run_return_without_claiming(
    db_dsn: str,
) -> None:
    ran: list[int] = []

    @task("hello")
    async def hello(payload: Hello, ctx: AsyncWorkerContext) -> None:
        ran.append(payload.n)

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        job = await utils.add_job(Hello(1))

    worker = AsyncWorker(options(db_dsn, hello, poll_interval=30))
    worker.stop()
    async with worker:
        await worker.run()

    assert ran == []
    row = await job_row(db_dsn, job.id)
    assert row is not None
    assert (row["attempts"], row["locked_by"]) == (0, None)


@pytest.mark.anyio
async def test_a_second_run_once_runs_the_jobs_added_since(db_dsn: str) -> None:
    ran: list[int] = []

    @task("hello")
    async def hello(payload: Hello, ctx: AsyncWorkerContext) -> None:
        ran.append(payload.n)

    async with (
        AsyncWorkerUtils(dsn=db_dsn) as utils,
        AsyncWorker(options(db_dsn, hello)) as worker,
    ):
        await utils.add_job(Hello(1))
        await worker.run_once()
        await utils.add_job(Hello(2))
        await worker.run_once()

    assert ran == [1, 2]


@pytest.mark.anyio
async def test_graceful_stop_lets_a_running_job_finish(db_dsn: str) -> None:
    finished: list[bool] = []
    worker: AsyncWorker | None = None

    @task("hello")
    async def hello(payload: Hello, ctx: AsyncWorkerContext) -> None:
        assert worker is not None
        worker.stop()
        await asleep(0.3)
        finished.append(ctx.aborted)

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        first = await utils.add_job(Hello(1), JobSpec(priority=-1))
        rest = await utils.add_jobs([Hello(2), Hello(3)])

    worker = AsyncWorker(options(db_dsn, hello, concurrency=1, shutdown_grace=5))
    async with worker:
        await worker.run()

    assert finished == [False]
    assert first.id not in await job_ids(db_dsn)
    for job in rest:  # never claimed after the stop
        row = await job_row(db_dsn, job.id)
        assert row is not None
        assert (row["attempts"], row["locked_by"]) == (0, None)


async def released_after_abort(
    db_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    handler: object,
    started: threading.Event,
) -> dict[str, Any]:
    """Start the one job, stop the worker, wait for run(); return the job row."""
    monkeypatch.setattr(worker_module, "ABORT_WAIT", ABORT_WAIT)
    stopped: list[str] = []
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        job = await utils.add_raw_job("stubborn", {})

    worker = AsyncWorker(options(db_dsn, handler, shutdown_grace=GRACE))
    worker.options.events.on("stop", lambda details: stopped.append("stop"))
    async with worker, running(worker):
        assert await wait_for(started.is_set)
        worker.stop()
        assert await wait_for(lambda: stopped)

    row = await job_row(db_dsn, job.id)
    assert row is not None
    return row


@pytest.mark.timeout(30)
@pytest.mark.anyio
async def test_a_job_that_ignores_the_abort_is_released(
    db_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = threading.Event()
    release = AEvent()

    @task("stubborn")
    async def stubborn(payload: Any, ctx: AsyncWorkerContext) -> None:
        started.set()
        await aevent_wait(release, WAIT)  # never looks at ctx.abort_signal

    try:
        row = await released_after_abort(db_dsn, monkeypatch, stubborn, started)
    finally:
        release.set()

    assert row["attempts"] == 1
    assert row["last_error"] == SHUTDOWN
    assert row["locked_by"] is None and row["locked_at"] is None
    assert row["is_available"] is True


@pytest.mark.timeout(30)
@pytest.mark.anyio
async def test_a_blocking_handler_that_ignores_the_abort_is_released(
    db_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = threading.Event()
    release = threading.Event()

    @task("stubborn")
    def stubborn(payload: Any, ctx: Any) -> None:
        started.set()
        release.wait(WAIT)  # never looks at ctx.abort_signal

    try:
        row = await released_after_abort(db_dsn, monkeypatch, stubborn, started)
    finally:
        release.set()

    assert row["attempts"] == 1
    assert row["last_error"] == SHUTDOWN
    assert row["locked_by"] is None and row["locked_at"] is None


# -- the local queue -------------------------------------------------------------


@pytest.mark.anyio
async def test_a_local_queue_runs_every_job_once_in_order(db_dsn: str) -> None:
    ran: list[int] = []

    @task("hello")
    async def hello(payload: Hello, ctx: AsyncWorkerContext) -> None:
        ran.append(payload.n)

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        for n in range(50):
            await utils.add_job(Hello(n), JobSpec(priority=n))

    await run_once(options(db_dsn, hello, concurrency=1, local_queue_size=20))

    assert ran == list(range(50))
    assert await job_ids(db_dsn) == []


async def claim_limits(dsn: str, settings: WorkerOptions) -> list[int]:
    """Run ``settings`` once and return the ``limit`` of every claim it made."""
    limits: list[int] = []
    claim_jobs = queries("graphile_worker").claim_jobs

    async def record(query: str, params: Params) -> None:
        if query == claim_jobs and isinstance(params, Mapping):
            limits.append(params["limit"])

    inner = AsyncPsycopgDatabase.from_dsn(dsn)
    await inner.open()
    try:
        database = AsyncWrappedDatabase(inner, record)
        async with AsyncWorker(settings, database=database) as worker:
            await worker.run_once()
    finally:
        await inner.close()

    return limits


@pytest.mark.anyio
async def test_auto_claims_short_jobs_in_batches(db_dsn: str) -> None:
    ran: list[int] = []

    @task("hello")
    async def hello(payload: Hello, ctx: AsyncWorkerContext) -> None:
        ran.append(payload.n)

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        await utils.add_jobs([Hello(n) for n in range(300)])

    limits = await claim_limits(db_dsn, options(db_dsn, hello, concurrency=2))

    assert sorted(ran) == list(range(300))
    assert await job_ids(db_dsn) == []
    # Claiming only for free runners takes 150 claims of 2; once the first
    # jobs show how short they are, the claims reach far beyond the runners.
    assert limits[0] == 2
    assert max(limits) > 100
    assert len(limits) < 20


@pytest.mark.anyio
async def test_auto_claims_long_jobs_only_for_free_runners(db_dsn: str) -> None:
    ran: list[int] = []

    @task("hello")
    async def hello(payload: Hello, ctx: AsyncWorkerContext) -> None:
        await asleep(0.1)
        ran.append(payload.n)

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        await utils.add_jobs([Hello(n) for n in range(8)])

    limits = await claim_limits(db_dsn, options(db_dsn, hello, concurrency=2))

    # 100 ms jobs on 2 runners: 20 ms of work is under one job, so no claim
    # asks for more than the free runners.
    assert sorted(ran) == list(range(8))
    assert limits and max(limits) <= 2


@pytest.mark.anyio
async def test_a_stop_returns_jobs_claimed_ahead_with_their_attempt(
    db_dsn: str,
) -> None:
    worker: AsyncWorker | None = None
    ran: list[int] = []

    @task("hello")
    async def hello(payload: Hello, ctx: AsyncWorkerContext) -> None:
        assert worker is not None
        ran.append(payload.n)
        worker.stop()

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        first = await utils.add_job(Hello(0), JobSpec(priority=-1))
        rest = await utils.add_jobs([Hello(n) for n in range(1, 11)])

    worker = AsyncWorker(options(db_dsn, hello, concurrency=1, local_queue_size=10))
    async with await AsyncConnection.connect(db_dsn, autocommit=True) as listener:
        await listener.execute('LISTEN "jobs:insert"')
        async with worker:
            await worker.run()

        counts = [
            json.loads(notify.payload)["count"]
            async for notify in listener.notifies(timeout=0.5)
        ]

    assert ran == [0]
    assert first.id not in await job_ids(db_dsn)
    for job in rest:  # claimed ahead (attempt counted), then given back
        row = await job_row(db_dsn, job.id)
        assert row is not None
        assert (row["attempts"], row["locked_by"], row["locked_at"]) == (0, None, None)

    # Listening workers hear of the ten jobs given back (in one or more
    # returns), as they hear of added ones.
    assert sum(counts) == 10 and all(count > 0 for count in counts)


@pytest.mark.anyio
async def test_jobs_claimed_ahead_go_back_when_they_wait_too_long(
    db_dsn: str,
) -> None:
    release = threading.Event()
    ran: list[int] = []
    locked_at: list[datetime | None] = []

    @task("hello")
    async def hello(payload: Hello, ctx: AsyncWorkerContext) -> None:
        ran.append(payload.n)
        locked_at.append(ctx.job.locked_at)
        if payload.n == 0:
            while not release.is_set():
                await asleep(POLL)

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        await utils.add_job(Hello(0), JobSpec(priority=-1))
        waiting = await utils.add_job(Hello(1))

    settings = options(
        db_dsn, hello, concurrency=1, local_queue_size=5, local_queue_ttl=0.2
    )
    worker = AsyncWorker(settings)
    async with worker, running(worker):
        assert await wait_for(lambda: ran == [0])
        # Hello(1) was claimed ahead while Hello(0) ran; past the TTL it is
        # given back (unlocked, attempt refunded) rather than run late, so it
        # runs under a lock taken after the release.
        await asleep(0.4)
        released_at = await db_now(db_dsn)
        release.set()
        assert await wait_for(lambda: 1 in ran)

    assert waiting.id not in await job_ids(db_dsn)
    assert ran == [0, 1]
    second = locked_at[1]
    assert second is not None and second > released_at


def holding_hello_zero(ran: list[int], release: threading.Event) -> TaskHandler:
    """A hello task that records each n and holds its runner on 0 until released."""

    @task("hello")
    async def hello(payload: Hello, ctx: AsyncWorkerContext) -> None:
        ran.append(payload.n)
        while payload.n == 0 and not release.is_set():
            await asleep(POLL)

    return hello


@pytest.mark.anyio
async def test_jobs_claimed_ahead_go_back_while_every_runner_is_busy(
    db_dsn: str,
) -> None:
    release = threading.Event()
    ran: list[int] = []
    hello = holding_hello_zero(ran, release)

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        await utils.add_job(Hello(0), JobSpec(priority=-1))
        waiting = await utils.add_job(Hello(1))

    settings = options(
        db_dsn,
        hello,
        concurrency=1,
        local_queue_size=5,
        local_queue_ttl=0.2,
        poll_interval=30,
    )
    worker = AsyncWorker(settings)
    async with worker, running(worker):
        assert await wait_for(lambda: ran == [0])

        async def unlocked() -> bool:
            row = await job_row(db_dsn, waiting.id)
            return row is not None and row["locked_by"] is None

        # Claimed ahead, then given back while Hello(0) still holds the only
        # runner: unlocked, its attempt refunded, free for any worker. The
        # TTL, not the 30 s poll, decides when.
        deadline = time.monotonic() + 0.2 + 1.0
        while not await unlocked():
            assert time.monotonic() < deadline
            await asleep(POLL)

        row = await job_row(db_dsn, waiting.id)
        assert row is not None and row["attempts"] == 0
        release.set()
        assert await wait_for(lambda: 1 in ran)

    assert waiting.id not in await job_ids(db_dsn)


@pytest.mark.anyio
async def test_a_stop_returns_jobs_claimed_ahead_over_dropped_connections(
    db_dsn: str,
) -> None:
    release = threading.Event()
    ran: list[int] = []
    hello = holding_hello_zero(ran, release)

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        await utils.add_job(Hello(0), JobSpec(priority=-1))
        waiting = await utils.add_jobs([Hello(n) for n in range(1, 11)])

    settings = options(db_dsn, hello, concurrency=1, local_queue_size=10)
    worker = AsyncWorker(settings)
    async with worker, running(worker):
        assert await wait_for(lambda: ran == [0])
        # Every connection of the worker's pool dies under it.
        (killed,) = await query(
            db_dsn,
            "select count(pg_terminate_backend(pid)) from pg_stat_activity"
            " where datname = current_database() and pid <> pg_backend_pid()",
        )
        assert killed[0] >= 2
        worker.stop()
        release.set()

    # The jobs claimed ahead went back on a live connection, attempt refunded.
    assert ran == [0]
    for job in waiting:
        row = await job_row(db_dsn, job.id)
        assert row is not None
        assert (row["attempts"], row["locked_by"]) == (0, None)


# -- failures that are hard to record ------------------------------------------


class Unprintable(Exception):
    """An exception whose message cannot even be formed."""

    def __str__(self) -> str:
        raise RuntimeError("no message")


@pytest.mark.anyio
async def test_awkward_failures_are_recorded_and_the_worker_carries_on(
    db_dsn: str,
) -> None:
    ran: list[int] = []
    problems: dict[int, BaseException] = {
        1: ValueError("bad\x00byte"),
        2: ValueError("bad \ud800 name"),
        3: Unprintable(),
        4: SystemExit(3),
        5: KeyboardInterrupt(),
        6: ValueError("x" * 50_000),
    }

    @task("hello")
    async def hello(payload: Hello, ctx: AsyncWorkerContext) -> None:
        if payload.n in problems:
            raise problems[payload.n]

        ran.append(payload.n)

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        jobs = {n: await utils.add_job(Hello(n)) for n in range(1, 11)}

    await run_once(options(db_dsn, hello, concurrency=2))

    # The others ran; each awkward one failed once, with a storable message.
    assert sorted(ran) == list(range(7, 11))
    errors = {}
    for n in problems:
        row = await job_row(db_dsn, jobs[n].id)
        assert row is not None
        assert (row["attempts"], row["locked_by"]) == (1, None)
        errors[n] = row["last_error"]

    assert errors[1] == "bad\\x00byte"
    assert errors[2] == "bad \\ud800 name"
    assert errors[3] == "Unprintable"
    assert errors[4] == "3"
    assert errors[5] == "KeyboardInterrupt"
    assert errors[6] == "x" * 10_000 + " [truncated]"


REFUSING_TRIGGERS = """
create function public.refuse_marked() returns trigger language plpgsql as $$
begin
  if tg_op = 'UPDATE' and new.last_error = 'REFUSE ME' then
    raise exception 'this error message is refused';
  end if;
  if tg_op = 'DELETE' and (old.payload::jsonb ->> 'keep') = 'true' then
    raise exception 'this job may not be deleted';
  end if;
  return coalesce(new, old);
end;
$$;
create trigger refuse_marked before update or delete
  on graphile_worker._private_jobs
  for each row execute function public.refuse_marked();
"""


@pytest.mark.anyio
async def test_a_write_the_database_refuses_costs_only_its_own_job(
    db_dsn: str,
) -> None:
    @task("hello")
    async def hello(payload: Any, ctx: AsyncWorkerContext) -> None:
        if payload.get("refuse"):
            raise RuntimeError("REFUSE ME")

        if payload.get("fail"):
            raise RuntimeError("plain failure")

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        refused = await utils.add_raw_job("hello", {"refuse": True})
        failed = await utils.add_raw_job("hello", {"fail": True})
        kept = await utils.add_raw_job("hello", {"keep": True})
        done = [await utils.add_raw_job("hello", {"n": n}) for n in range(5)]

    await query(db_dsn, REFUSING_TRIGGERS)
    worker = AsyncWorker(options(db_dsn, hello, concurrency=8))
    async with worker:
        await worker.run_once()

    # The refused failure is recorded with a message the database accepts, so
    # the job is retried; the other outcomes are written as usual.
    row = await job_row(db_dsn, refused.id)
    assert row is not None
    assert (row["attempts"], row["locked_by"]) == (1, None)
    assert row["last_error"].startswith("the database refused this job's error")
    assert "this error message is refused" in row["last_error"]

    row = await job_row(db_dsn, failed.id)
    assert row is not None
    assert (row["attempts"], row["last_error"], row["locked_by"]) == (
        1,
        "plain failure",
        None,
    )

    assert all([await job_row(db_dsn, job.id) is None for job in done])

    # A success that cannot be deleted stays locked to the worker, never run
    # again behind its back.
    row = await job_row(db_dsn, kept.id)
    assert row is not None
    assert (row["attempts"], row["locked_by"]) == (1, worker.worker_id)
