"""AsyncCronScheduler against a real database, with a clock the tests drive.

The fake clock jumps straight to whatever minute the scheduler waits for, so a
day of schedule takes moments. It can also be told to arrive late, or to be
set forward or back, at a given minute. Expected jobs are worked out from the
crontab by plain arithmetic over the minutes of the window (and, for time
zones, from the 2026 daylight saving dates of the zones concerned); the jobs
themselves are read back from the tables with SQL of our own.

What a run adds for a minute follows graphile-worker 0.18: a job per due item
with ``run_at`` at that minute and ``_cron: {ts, backfilled}`` in its payload,
added at most once per item and minute across all schedulers. Our scheduler
also restarts with backfill when it finds itself more than five minutes
behind (a clock set forward, or a suspended process) instead of adding a job
for every minute it missed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString, NamedTuple

import pytest
from psycopg import AsyncConnection

from graphile_worker import (
    AsyncDatabase,
    AsyncPsycopgDatabase,
    AsyncWorker,
    AsyncWorkerContext,
    CronItem,
    DatabaseError,
    Events,
    WorkerOptions,
    cron,
    parse_crontab,
    task,
)
from graphile_worker._acompat import AEvent, ATaskGroup, aevent_wait, asleep
from graphile_worker._sql import queries
from graphile_worker.database_async import Params, Row
from graphile_worker.scheduler_async import AsyncCronScheduler
from tests.wrapped_async import AsyncWrappedDatabase

SCHEMA = "graphile_worker"
WAIT = 60.0  # seconds: the most a fake clock may take to reach its end
POLL = 0.01  # seconds between checks of a condition
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
T0 = datetime(2030, 1, 1, tzinfo=UTC)  # a Tuesday, well clear of any real clock
CRON_SCHEDULE = queries(SCHEMA).cron_schedule
RESTART_LOG = re.compile(r"Cron hit an error; restarting in [0-9.]+s \(attempt (\d+)\)")

JOBS_SQL: LiteralString = """
select tasks.identifier, jobs.run_at, jobs.payload::text, queues.queue_name,
  jobs.priority, jobs.max_attempts, jobs.key, jobs.revision
from graphile_worker._private_jobs as jobs
join graphile_worker._private_tasks as tasks on tasks.id = jobs.task_id
left join graphile_worker._private_job_queues as queues
  on queues.id = jobs.job_queue_id
order by jobs.run_at, tasks.identifier, jobs.id
"""


class FakeClock:
    """A clock that goes wherever the scheduler waits for, at once.

    It starts at ``start``; ``sleep_until(when)`` moves it on to ``when`` (never
    back), except that a minute listed in ``shifts`` moves it to that minute
    plus the shift instead, once: a positive shift is a late timer or a clock
    set forward, a negative one a clock set back. Asked to wait for ``end`` or
    later, it sets ``reached_end`` and waits for ``stopping`` like a clock that
    stops at ``end``.
    """

    def __init__(
        self,
        start: datetime,
        end: datetime,
        shifts: Mapping[datetime, timedelta] | None = None,
    ) -> None:
        self._now = start
        self.end = end
        self.shifts = dict(shifts or {})
        self.reached_end = AEvent()

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        """Let ``delta`` pass, as an outage would."""
        self._now += delta

    async def sleep_until(self, when: datetime, stopping: AEvent) -> bool:
        await asleep(0)  # let others run, as a real wait would
        if stopping.is_set():
            return True

        if when >= self.end:
            self.reached_end.set()
            return await aevent_wait(stopping, None)

        shift = self.shifts.pop(when, None)
        self._now = when + shift if shift is not None else max(self._now, when)
        return False


class Added(NamedTuple):
    """A job as the scheduler left it, with ``_cron`` split off its payload."""

    task: str
    run_at: datetime
    ts: str
    backfilled: bool
    payload: dict[str, Any]
    queue_name: str | None
    priority: int
    max_attempts: int
    key: str | None
    revision: int


def js_iso(moment: datetime) -> str:
    """A whole UTC minute as JavaScript's ``toISOString()`` writes it."""
    assert moment.second == 0 and moment.microsecond == 0
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") + ":00.000Z"


def every(step: timedelta, first: datetime, stop: datetime) -> list[datetime]:
    """``first``, ``first + step``, ... up to but not including ``stop``."""
    found: list[datetime] = []
    moment = first
    while moment < stop:
        found.append(moment)
        moment += step

    return found


async def query(dsn: str, sql: LiteralString, params: Params = None) -> list[Row]:
    """Run one statement on a connection of its own and return its rows."""
    async with await AsyncConnection.connect(dsn, autocommit=True) as connection:
        cursor = await connection.execute(sql, params)
        return await cursor.fetchall() if cursor.description else []


async def added_jobs(dsn: str) -> list[Added]:
    """Every job in the database, oldest ``run_at`` first."""
    found: list[Added] = []
    for name, run_at, text, queue, priority, attempts, key, revision in await query(
        dsn, JOBS_SQL
    ):
        payload = json.loads(text)
        stamp = payload.pop("_cron")
        assert sorted(stamp) == ["backfilled", "ts"]
        found.append(
            Added(
                name,
                run_at,
                stamp["ts"],
                stamp["backfilled"],
                payload,
                queue,
                priority,
                attempts,
                key,
                revision,
            )
        )

    return found


def runs_of(jobs: Sequence[Added], name: str) -> list[tuple[datetime, bool]]:
    """(run_at, backfilled) of the jobs of task ``name``, checking ``ts``."""
    found: list[tuple[datetime, bool]] = []
    for job in jobs:
        if job.task == name:
            assert job.ts == js_iso(job.run_at), job
            found.append((job.run_at, job.backfilled))

    return found


async def known_crontabs(dsn: str) -> dict[str, tuple[datetime, datetime | None]]:
    rows = await query(
        dsn,
        "select identifier, known_since, last_execution"
        " from graphile_worker._private_known_crontabs",
    )
    return {row[0]: (row[1], row[2]) for row in rows}


async def wait_for(condition: Callable[[], object], seconds: float = WAIT) -> bool:
    """Check ``condition`` until it holds or ``seconds`` pass; say which."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() >= deadline:
            return False

        await asleep(POLL)

    return True


def recorded(events: Events, *names: str) -> dict[str, list[Mapping[str, Any]]]:
    """Lists that collect the details of each event in ``names``."""
    seen: dict[str, list[Mapping[str, Any]]] = {name: [] for name in names}
    for name in names:
        events.on(name, seen[name].append)

    return seen


@asynccontextmanager
async def opened(dsn: str) -> AsyncIterator[AsyncPsycopgDatabase]:
    """A database handle with a pool of its own, closed after the block."""
    database = AsyncPsycopgDatabase.from_dsn(dsn, max_size=4)
    await database.open()
    try:
        yield database
    finally:
        await database.close()


async def run_schedulers(
    runs: Sequence[tuple[AsyncDatabase, FakeClock]],
    items: Sequence[CronItem],
    events: Events | None = None,
) -> None:
    """Run a scheduler on each (database, clock) until every clock is at its end."""
    stopping = AEvent()
    async with ATaskGroup() as group:
        for index, (database, clock) in enumerate(runs):
            scheduler = AsyncCronScheduler(
                database,
                SCHEMA,
                items,
                events=events or Events(),
                worker_id=f"cron-test-{index}",
                stopping=stopping,
                clock=clock,
            )
            group.start_soon(scheduler.run, name=f"cron-test-{index}")

        try:
            for _, clock in runs:
                assert await aevent_wait(clock.reached_end, WAIT)
        finally:
            stopping.set()


async def schedule(
    dsn: str,
    items: Sequence[CronItem],
    clock: FakeClock,
    events: Events | None = None,
) -> None:
    """Run one scheduler with ``clock`` until the clock is at its end."""
    async with opened(dsn) as database:
        await run_schedulers([(database, clock)], items, events)


class FailingSchedules:
    """A statement hook that fails some cron_schedule statements.

    ``failures`` maps a cron minute to how many of its ``cron_schedule``
    statements to fail (each failure lets ``outage`` pass on ``clock``, as a
    database that is away for a while would).
    """

    def __init__(
        self,
        clock: FakeClock,
        failures: Mapping[datetime, int],
        outage: timedelta,
    ) -> None:
        self.clock = clock
        self.failures = dict(failures)
        self.outage = outage
        self.failed: list[datetime] = []

    async def before(self, query: str, params: Params) -> None:
        if query == CRON_SCHEDULE and isinstance(params, Mapping):
            ts: datetime = params["ts"]
            if self.failures.get(ts, 0) > 0:
                self.failures[ts] -= 1
                self.failed.append(ts)
                self.clock.advance(self.outage)
                raise DatabaseError("injected failure of cron_schedule")


def worker_options(dsn: str, tasks: Sequence[object], **settings: Any) -> WorkerOptions:
    settings.setdefault("handle_signals", False)
    settings.setdefault("concurrency", 2)
    settings.setdefault("poll_interval", 0.2)
    return WorkerOptions(dsn=dsn, tasks=tasks, **settings)


@task("noop")
async def noop(payload: Any, ctx: AsyncWorkerContext) -> None:
    """A task for workers that must not run the cron jobs."""


@asynccontextmanager
async def running(*workers: AsyncWorker) -> AsyncIterator[None]:
    """Run each worker's ``run()`` beside the block; stop them all after it."""
    async with ATaskGroup() as group:
        for index, worker in enumerate(workers):
            group.start_soon(worker.run, name=f"cron-test-worker-{index}")

        try:
            yield
        finally:
            for worker in workers:
                worker.stop()


# -- a day at once ---------------------------------------------------------------


@pytest.mark.anyio
async def test_a_day_of_quarter_hours_adds_96_jobs_with_their_options(
    db_dsn: str,
) -> None:
    items = parse_crontab(
        "*/15 * * * * quarter ?queue=cron-q&priority=3&max=7 {kind: 'q', n: 1}\n"
        "0 * * * * hourly ?id=replaced&jobKey=hour-key {kind: 'h'}\n"
        "0 * * * * kept ?jobKey=kept-key&jobKeyMode=preserve_run_at\n"
    )
    events = Events()
    seen = recorded(events, "cron:schedule", "cron:backfill")
    await schedule(db_dsn, items, FakeClock(T0, T0 + DAY), events)

    jobs = await added_jobs(db_dsn)
    quarters = [job for job in jobs if job.task == "quarter"]
    expected = every(15 * MINUTE, T0, T0 + DAY)
    assert len(expected) == 96
    assert [job.run_at for job in quarters] == expected
    assert [job.ts for job in quarters] == [js_iso(moment) for moment in expected]
    assert {
        (job.backfilled, json.dumps(job.payload, sort_keys=True), job.queue_name)
        for job in quarters
    } == {(False, '{"kind": "q", "n": 1}', "cron-q")}
    assert {(job.priority, job.max_attempts, job.key) for job in quarters} == {
        (3, 7, None)
    }

    # The keyed items add one job each, replaced 23 times: "replace" moves it
    # to the last hour, "preserve_run_at" keeps the first hour's run_at.
    last_hour = T0 + 23 * HOUR
    (hourly,) = [job for job in jobs if job.task == "hourly"]
    assert (hourly.run_at, hourly.ts, hourly.payload) == (
        last_hour,
        js_iso(last_hour),
        {"kind": "h"},
    )
    assert (hourly.key, hourly.revision, hourly.backfilled) == ("hour-key", 23, False)
    (kept,) = [job for job in jobs if job.task == "kept"]
    assert (kept.run_at, kept.ts, kept.key, kept.revision) == (
        T0,
        js_iso(last_hour),
        "kept-key",
        23,
    )
    assert len(jobs) == 98

    # One statement per minute with a due item; nothing to backfill for
    # identifiers seen for the first time.
    assert len(seen["cron:schedule"]) == 96
    assert seen["cron:backfill"] == []
    assert await known_crontabs(db_dsn) == {
        "quarter": (T0, T0 + DAY - 15 * MINUTE),
        "replaced": (T0, last_hour),
        "kept": (T0, last_hour),
    }


@pytest.mark.anyio
async def test_a_start_between_minutes_first_fires_at_the_next_minute(
    db_dsn: str,
) -> None:
    items = [cron("* * * * *", "minutely", payload={"a": [1, 2]})]
    start = T0 + timedelta(seconds=59, microseconds=999_999)
    await schedule(db_dsn, items, FakeClock(start, T0 + 5 * MINUTE))

    jobs = await added_jobs(db_dsn)
    assert runs_of(jobs, "minutely") == [
        (moment, False) for moment in every(MINUTE, T0 + MINUTE, T0 + 5 * MINUTE)
    ]
    assert {json.dumps(job.payload) for job in jobs} == {'{"a": [1, 2]}'}
    assert await known_crontabs(db_dsn) == {"minutely": (start, T0 + 4 * MINUTE)}


# -- exactly once ----------------------------------------------------------------


CRONTAB = (
    "* * * * * minutely ?fill=10m\n"
    "*/7 * * * * seventh\n"
    "0,30 * * * * half ?id=half_hour {x: 1}\n"
)


def expected_runs(start: datetime, end: datetime) -> dict[str, list[datetime]]:
    """The minutes each item of :data:`CRONTAB` fires at in [start, end)."""
    minutes = every(MINUTE, start, end)
    return {
        "minutely": minutes,
        "seventh": [moment for moment in minutes if moment.minute % 7 == 0],
        "half": [moment for moment in minutes if moment.minute in (0, 30)],
    }


@pytest.mark.anyio
async def test_two_schedulers_add_each_item_and_minute_once(db_dsn: str) -> None:
    items = parse_crontab(CRONTAB)
    end = T0 + 6 * HOUR
    async with opened(db_dsn) as first, opened(db_dsn) as second:
        await run_schedulers(
            [(first, FakeClock(T0, end)), (second, FakeClock(T0, end))], items
        )

    jobs = await added_jobs(db_dsn)
    expected = expected_runs(T0, end)
    for name, minutes in expected.items():
        assert runs_of(jobs, name) == [(moment, False) for moment in minutes], name
    assert [len(minutes) for minutes in expected.values()] == [360, 6 * 9, 6 * 2]
    assert len(jobs) == 360 + 54 + 12


@pytest.mark.anyio
async def test_two_running_workers_add_each_item_and_minute_once(db_dsn: str) -> None:
    end = T0 + 3 * HOUR
    clocks = [FakeClock(T0, end), FakeClock(T0, end)]
    workers = [
        AsyncWorker(worker_options(db_dsn, [noop], crontab=CRONTAB, clock=clock))
        for clock in clocks
    ]
    async with running(*workers):
        for clock in clocks:
            assert await aevent_wait(clock.reached_end, WAIT)

    jobs = await added_jobs(db_dsn)
    for name, minutes in expected_runs(T0, end).items():
        assert runs_of(jobs, name) == [(moment, False) for moment in minutes], name
    assert len(jobs) == 180 + 3 * 9 + 3 * 2
    known = await known_crontabs(db_dsn)
    assert known == {
        "minutely": (T0, end - MINUTE),
        "seventh": (T0, datetime(2030, 1, 1, 2, 56, tzinfo=UTC)),
        "half_hour": (T0, end - 30 * MINUTE),
    }


# -- backfill on start -----------------------------------------------------------


@pytest.mark.anyio
async def test_start_backfills_known_items_within_their_fill_window(
    db_dsn: str,
) -> None:
    start = T0 + 12 * HOUR + timedelta(seconds=30, microseconds=123_456)
    long_ago = start - 10 * DAY
    await query(
        db_dsn,
        "insert into graphile_worker._private_known_crontabs"
        " (identifier, known_since, last_execution) values"
        " ('filled', %(long_ago)s, %(three_hours)s),"
        " ('unfilled', %(long_ago)s, %(three_hours)s),"
        " ('recent', %(long_ago)s, %(recent)s),"
        " ('never_ran', %(since)s, null)",
        {
            "long_ago": long_ago,
            "three_hours": start - 3 * HOUR,
            "recent": T0 + 11 * HOUR + 40 * MINUTE,
            "since": T0 + 11 * HOUR + 25 * MINUTE,
        },
    )
    items = parse_crontab(
        "*/10 * * * * filled ?fill=1h\n"
        "*/10 * * * * unfilled\n"
        "*/10 * * * * recent ?fill=1h\n"
        "*/10 * * * * never_ran ?fill=2h\n"
        "*/10 * * * * brand_new ?fill=1h\n"
    )
    events = Events()
    seen = recorded(events, "cron:backfill")
    await schedule(db_dsn, items, FakeClock(start, T0 + 12 * HOUR + MINUTE), events)

    jobs = await added_jobs(db_dsn)
    # The hour before the start: 11:00:30 to 12:00:30, so 11:10 to 12:00.
    last_hour = every(10 * MINUTE, T0 + 11 * HOUR + 10 * MINUTE, start)
    assert runs_of(jobs, "filled") == [(moment, True) for moment in last_hour]
    assert runs_of(jobs, "unfilled") == []
    # From its last run (which is not run again) on.
    assert runs_of(jobs, "recent") == [
        (T0 + 11 * HOUR + 50 * MINUTE, True),
        (T0 + 12 * HOUR, True),
    ]
    # Never ran: from when it became known, though its window is longer.
    assert runs_of(jobs, "never_ran") == [
        (moment, True)
        for moment in every(10 * MINUTE, T0 + 11 * HOUR + 30 * MINUTE, start)
    ]
    assert runs_of(jobs, "brand_new") == []
    assert len(jobs) == 6 + 2 + 4

    # One statement per backfilled minute, oldest first.
    assert [details["timestamp"] for details in seen["cron:backfill"]] == last_hour
    known = await known_crontabs(db_dsn)
    assert known == {
        "filled": (long_ago, T0 + 12 * HOUR),
        "unfilled": (long_ago, start - 3 * HOUR),
        "recent": (long_ago, T0 + 12 * HOUR),
        "never_ran": (T0 + 11 * HOUR + 25 * MINUTE, T0 + 12 * HOUR),
        "brand_new": (start, None),
    }


# -- clock trouble ---------------------------------------------------------------


@pytest.mark.anyio
async def test_a_clock_set_forward_backfills_only_the_fill_window(
    db_dsn: str,
) -> None:
    items = parse_crontab("*/5 * * * * filled ?fill=1h\n*/5 * * * * plain\n")
    jump_at = T0 + HOUR
    events = Events()
    seen = recorded(events, "cron:starting", "cron:overdueTimer")
    clock = FakeClock(T0, T0 + 6 * HOUR, {jump_at: 3 * HOUR})
    await schedule(db_dsn, items, clock, events)

    jobs = await added_jobs(db_dsn)
    before = [(moment, False) for moment in every(5 * MINUTE, T0, jump_at)]
    after = [
        (moment, False) for moment in every(5 * MINUTE, T0 + 4 * HOUR, T0 + 6 * HOUR)
    ]
    fill = [
        (moment, True) for moment in every(5 * MINUTE, T0 + 3 * HOUR, T0 + 4 * HOUR)
    ]
    assert runs_of(jobs, "filled") == before + fill + after
    assert runs_of(jobs, "plain") == before + after
    assert len(seen["cron:starting"]) == 2  # restarted once, at the jump
    assert seen["cron:overdueTimer"] == []


@pytest.mark.anyio
async def test_a_clock_set_back_adds_no_minute_twice(db_dsn: str) -> None:
    items = parse_crontab("* * * * * minutely ?fill=1h\n*/20 * * * * third\n")
    set_back_at = T0 + 90 * MINUTE
    events = Events()
    seen = recorded(events, "cron:prematureTimer", "cron:starting")
    clock = FakeClock(T0, T0 + 3 * HOUR, {set_back_at: -HOUR})
    await schedule(db_dsn, items, clock, events)

    # A restart whose clock is an hour behind the last run: the hour goes by
    # again, but its minutes are already done.
    events_behind = Events()
    seen_behind = recorded(events_behind, "cron:backfill", "cron:scheduled")
    behind = FakeClock(T0 + 2 * HOUR, T0 + 4 * HOUR)
    await schedule(db_dsn, items, behind, events_behind)

    jobs = await added_jobs(db_dsn)
    minutes = every(MINUTE, T0, T0 + 4 * HOUR)
    assert runs_of(jobs, "minutely") == [(moment, False) for moment in minutes]
    assert runs_of(jobs, "third") == [
        (moment, False) for moment in minutes if moment.minute % 20 == 0
    ]
    assert [details["expected"] for details in seen["cron:prematureTimer"]] == [
        set_back_at
    ]
    assert len(seen["cron:starting"]) == 1
    assert seen_behind["cron:backfill"] == []
    added = [
        details["timestamp"]
        for details in seen_behind["cron:scheduled"]
        if details["job_ids"]
    ]
    assert added == every(MINUTE, T0 + 3 * HOUR, T0 + 4 * HOUR)
    assert (await known_crontabs(db_dsn))["minutely"] == (T0, T0 + 4 * HOUR - MINUTE)


@pytest.mark.anyio
async def test_a_late_timer_catches_up_minute_by_minute(db_dsn: str) -> None:
    items = [cron("* * * * *", "minutely")]
    late_at = T0 + 10 * MINUTE
    events = Events()
    seen = recorded(events, "cron:overdueTimer", "cron:starting")
    clock = FakeClock(
        T0, T0 + 30 * MINUTE, {late_at: 2 * MINUTE + timedelta(seconds=5)}
    )
    await schedule(db_dsn, items, clock, events)

    jobs = await added_jobs(db_dsn)
    assert runs_of(jobs, "minutely") == [
        (moment, False) for moment in every(MINUTE, T0, T0 + 30 * MINUTE)
    ]
    assert [details["expected"] for details in seen["cron:overdueTimer"]] == [
        late_at,
        late_at + MINUTE,
    ]
    assert len(seen["cron:starting"]) == 1


# -- database errors -------------------------------------------------------------


@pytest.mark.anyio
async def test_database_errors_restart_the_scheduler_and_not_the_worker(
    db_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[int] = []

    @task("other")
    async def other(payload: dict[str, int], ctx: AsyncWorkerContext) -> None:
        ran.append(payload["n"])

    items = parse_crontab("*/5 * * * * filled ?fill=1h\n*/5 * * * * plain\n")
    broken_at = T0 + 20 * MINUTE
    outage = 10 * MINUTE
    end = T0 + 2 * HOUR
    clock = FakeClock(T0, end)
    await query(
        db_dsn,
        "select graphile_worker.add_job('other', json_build_object('n', n))"
        " from generate_series(1, 5) as n",
    )
    async with opened(db_dsn) as inner:
        failing = FailingSchedules(clock, {broken_at: 3}, outage)
        database = AsyncWrappedDatabase(inner, failing.before)
        settings = worker_options(db_dsn, [other], crontab=items, clock=clock)
        seen = recorded(settings.events, "cron:starting")
        worker = AsyncWorker(settings, database=database)
        async with running(worker):
            assert await aevent_wait(clock.reached_end, WAIT)
            await query(
                db_dsn,
                "select graphile_worker.add_job('other', json_build_object('n', n))"
                " from generate_series(6, 10) as n",
            )
            assert await wait_for(lambda: len(ran) == 10)

    assert sorted(ran) == list(range(1, 11))
    assert failing.failed == [broken_at] * 3
    restarts = [RESTART_LOG.match(record.getMessage()) for record in caplog.records]
    assert [int(found[1]) for found in restarts if found] == [1, 2, 3]
    assert len(seen["cron:starting"]) == 4

    # Each failure took ten minutes; back at 20:00 + 30:00 = 50:00, the fill
    # window covers all that was missed, the plain item loses it.
    recovered = broken_at + 3 * outage
    jobs = await added_jobs(db_dsn)
    before = [(moment, False) for moment in every(5 * MINUTE, T0, broken_at)]
    missed = [(moment, True) for moment in every(5 * MINUTE, broken_at, recovered)]
    after = [(moment, False) for moment in every(5 * MINUTE, recovered, end)]
    assert runs_of(jobs, "filled") == before + missed + after
    assert runs_of(jobs, "plain") == before + after
    assert (await known_crontabs(db_dsn))["plain"] == (T0, end - 5 * MINUTE)


@pytest.mark.anyio
async def test_the_backoff_starts_over_after_the_scheduler_recovers(
    db_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    items = [cron("*/5 * * * *", "filled", fill="1h")]
    clock = FakeClock(T0, T0 + 3 * HOUR)
    failures = {T0 + 20 * MINUTE: 1, T0 + 2 * HOUR: 1}
    async with opened(db_dsn) as inner:
        failing = FailingSchedules(clock, failures, MINUTE)
        database = AsyncWrappedDatabase(inner, failing.before)
        await run_schedulers([(database, clock)], items)

    jobs = await added_jobs(db_dsn)
    assert len(runs_of(jobs, "filled")) == 36  # nothing lost
    assert failing.failed == list(failures)
    restarts = [RESTART_LOG.match(record.getMessage()) for record in caplog.records]
    assert [int(found[1]) for found in restarts if found] == [1, 1]


# -- time zones ------------------------------------------------------------------


def utc(day: str, hour: int, minute: int) -> datetime:
    """``day`` ("MM-DD", 2026) at ``hour:minute`` UTC."""
    month, mday = (int(part) for part in day.split("-"))
    return datetime(2026, month, mday, hour, minute, tzinfo=UTC)


# In 2026 New York moves to EDT (UTC-4) on 8 March and back to EST (UTC-5) on
# 1 November, both at 02:00 local; Paris moves to CEST (UTC+2) on 29 March at
# 02:00 CET and back to CET (UTC+1) on 25 October at 03:00 CEST, so 02:30 does
# not exist on 29 March and happens twice on 25 October.
DST_WINDOWS = {
    "us-spring": (
        utc("03-06", 0, 0),
        utc("03-11", 0, 0),
        [utc("03-06", 14, 0), utc("03-07", 14, 0)]
        + [utc(day, 13, 0) for day in ("03-08", "03-09", "03-10")],
        [utc(day, 1, 30) for day in ("03-06", "03-07", "03-08", "03-09", "03-10")],
    ),
    "eu-spring": (
        utc("03-27", 0, 0),
        utc("03-31", 0, 0),
        [utc(day, 13, 0) for day in ("03-27", "03-28", "03-29", "03-30")],
        [
            utc("03-27", 1, 30),
            utc("03-28", 1, 30),
            utc("03-29", 1, 0),
            utc("03-30", 0, 30),
        ],
    ),
    "eu-autumn": (
        utc("10-23", 0, 0),
        utc("10-28", 0, 0),
        [utc(day, 13, 0) for day in ("10-23", "10-24", "10-25", "10-26", "10-27")],
        [utc(day, 0, 30) for day in ("10-23", "10-24", "10-25")]
        + [utc(day, 1, 30) for day in ("10-26", "10-27")],
    ),
    "us-autumn": (
        utc("10-30", 0, 0),
        utc("11-04", 0, 0),
        [utc("10-30", 13, 0), utc("10-31", 13, 0)]
        + [utc(day, 14, 0) for day in ("11-01", "11-02", "11-03")],
        [utc(day, 1, 30) for day in ("10-30", "10-31", "11-01", "11-02", "11-03")],
    ),
}


@pytest.mark.parametrize("window", list(DST_WINDOWS))
@pytest.mark.anyio
async def test_items_in_a_time_zone_follow_its_daylight_saving(
    db_dsn: str, window: str
) -> None:
    start, end, new_york, paris = DST_WINDOWS[window]
    items = [
        cron("0 9 * * *", "new_york_nine", timezone="America/New_York"),
        cron("30 2 * * *", "paris_half_two", timezone="Europe/Paris"),
    ]
    await schedule(db_dsn, items, FakeClock(start, end))

    jobs = await added_jobs(db_dsn)
    assert runs_of(jobs, "new_york_nine") == [(moment, False) for moment in new_york]
    assert runs_of(jobs, "paris_half_two") == [(moment, False) for moment in paris]
    assert len(jobs) == len(new_york) + len(paris)


@pytest.mark.anyio
async def test_a_time_zone_item_backfills_its_skipped_and_repeated_minutes_once(
    db_dsn: str,
) -> None:
    # Last run a week before each change; started just after it, the day of
    # fill reaches back over the skipped (or twice seen) 02:30.
    items = [cron("30 2 * * *", "paris_half_two", timezone="Europe/Paris", fill="1d")]
    spring = (utc("03-22", 1, 30), utc("03-29", 1, 20))
    autumn = (utc("10-18", 0, 30), utc("10-25", 1, 40))
    for (last_run, start), expected in (
        (spring, [utc("03-28", 1, 30), utc("03-29", 1, 0)]),
        (autumn, [utc("10-25", 0, 30)]),
    ):
        await query(db_dsn, "delete from graphile_worker._private_jobs")
        await query(
            db_dsn,
            "insert into graphile_worker._private_known_crontabs as known"
            " (identifier, known_since, last_execution)"
            " values ('paris_half_two', %(last)s, %(last)s)"
            " on conflict (identifier) do update set last_execution = %(last)s",
            {"last": last_run},
        )
        await schedule(db_dsn, items, FakeClock(start, start + MINUTE))
        jobs = await added_jobs(db_dsn)
        assert runs_of(jobs, "paris_half_two") == [
            (moment, True) for moment in expected
        ]
