"""AsyncWorkerUtils against a real, freshly migrated database.

Expected values come from the schema's documented semantics (the comments of
the SQL functions, graphile-worker's documentation) and from plain arithmetic,
and are read back with SQL of our own rather than trusted from the return
values. Statements are counted by a hook of
:class:`tests.wrapped_async.AsyncWrappedDatabase`, which hands each one on to a
real database.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar, LiteralString, cast

import msgspec
import psycopg
import pytest
from psycopg import AsyncConnection, Rollback

from graphile_worker import (
    AsyncPsycopgDatabase,
    AsyncWorker,
    AsyncWorkerContext,
    AsyncWorkerUtils,
    ConfigurationError,
    InvalidJobError,
    Job,
    JobSpec,
    RawJob,
    WorkerOptions,
    task,
)
from graphile_worker.database_async import Params, Row
from graphile_worker.migrate_async import migrate
from tests.wrapped_async import AsyncWrappedDatabase

SCHEMA_DEFAULT_MAX_ATTEMPTS = 25  # _private_jobs.max_attempts default
MANUAL_FAILURE = "Manually marked as failed"  # permanently_fail_jobs' default
BULK_JOBS = 100_000
QUIET_WAIT = 0.3  # seconds to listen for a notification that must not come
NOTIFY_WAIT = 5.0  # seconds to wait for one that must

# Fixed instants, far in the future so no worker-side "now" can catch up.
FAR = datetime(2100, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
FARTHER = FAR + timedelta(days=1, microseconds=1)
FARTHEST = FAR + timedelta(days=2)
INDIA = timezone(timedelta(hours=5, minutes=30))
STORED_FIELDS = (
    "task_identifier",
    "queue_name",
    "payload",
    "priority",
    "run_at",
    "attempts",
    "max_attempts",
    "last_error",
    "key",
    "locked_at",
    "locked_by",
    "revision",
    "flags",
)


class Hello(msgspec.Struct):
    """A typed task payload."""

    IDENTIFIER: ClassVar[str] = "hello"

    name: str


class Item(msgspec.Struct):
    """One item of a batch task."""

    IDENTIFIER: ClassVar[str] = "batch"

    n: int


class NotATask(msgspec.Struct):
    """A Struct without an IDENTIFIER."""

    n: int


@asynccontextmanager
async def counted(dsn: str) -> AsyncIterator[tuple[AsyncWorkerUtils, list[str]]]:
    """Utilities on one autocommit connection, and the statements they send."""
    statements: list[str] = []

    async def record(query: str, params: Params) -> None:
        statements.append(query)

    async with await AsyncConnection.connect(dsn, autocommit=True) as connection:
        database = AsyncWrappedDatabase(AsyncPsycopgDatabase(connection), record)
        yield AsyncWorkerUtils(database=database), statements


async def query(dsn: str, sql: LiteralString, params: Params = None) -> list[Row]:
    """Run one statement on a connection of its own and return its rows."""
    async with await AsyncConnection.connect(dsn, autocommit=True) as connection:
        cursor = await connection.execute(sql, params)
        return await cursor.fetchall() if cursor.description else []


async def job_count(dsn: str) -> int:
    rows = await query(dsn, "select count(*) from graphile_worker._private_jobs")
    return int(rows[0][0])


async def lock_job(dsn: str, job_id: int, worker: str = "someone-else") -> None:
    """Lock a job by hand, as a running worker would."""
    await query(
        dsn,
        "update graphile_worker._private_jobs"
        " set locked_at = now(), locked_by = %s where id = %s",
        [worker, job_id],
    )


async def stored(dsn: str, job_id: int) -> dict[str, Any] | None:
    """The job as the tables hold it, with its names; None if it is gone."""
    rows = await query(
        dsn,
        "select tasks.identifier, queues.queue_name, jobs.payload::text,"
        " jobs.priority, jobs.run_at, jobs.attempts, jobs.max_attempts,"
        " jobs.last_error, jobs.key, jobs.locked_at, jobs.locked_by,"
        " jobs.revision, jobs.flags::text"
        " from graphile_worker._private_jobs as jobs"
        " join graphile_worker._private_tasks as tasks on tasks.id = jobs.task_id"
        " left join graphile_worker._private_job_queues as queues"
        " on queues.id = jobs.job_queue_id"
        " where jobs.id = %s",
        [job_id],
    )
    if not rows:
        return None

    row = dict(zip(STORED_FIELDS, rows[0], strict=True))
    row["payload"] = json.loads(row["payload"])
    row["flags"] = None if row["flags"] is None else json.loads(row["flags"])
    return row


def as_stored(job: Job) -> dict[str, Any]:
    """The fields of a returned job that ``stored`` reads back."""
    return {
        "task_identifier": job.task_identifier,
        "queue_name": job.queue_name,
        "payload": job.payload,
        "priority": job.priority,
        "run_at": job.run_at,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "last_error": job.last_error,
        "key": job.key,
        "locked_at": job.locked_at,
        "locked_by": job.locked_by,
        "revision": job.revision,
        "flags": job.flags,
    }


@pytest.mark.anyio
async def test_add_job_with_a_typed_task_stores_every_field(db_dsn: str) -> None:
    spec = JobSpec(
        queue_name="greetings",
        run_at=FAR.astimezone(INDIA),
        job_key="hello-ada",
        priority=-5,
        flags=["slow", "loud"],
    )

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        job = await utils.add_job(Hello(name="Ada"), spec)

    assert job.task_identifier == "hello"
    assert job.queue_name == "greetings"
    assert job.payload == {"name": "Ada"}
    assert job.priority == -5
    assert job.run_at == FAR
    assert job.max_attempts == SCHEMA_DEFAULT_MAX_ATTEMPTS
    assert job.attempts == 0
    assert job.flags == {"slow": True, "loud": True}
    assert job.key == "hello-ada"
    assert job.revision == 0
    assert job.last_error is None
    assert job.locked_at is None and job.locked_by is None

    assert await stored(db_dsn, job.id) == as_stored(job)


@pytest.mark.anyio
async def test_add_raw_job_takes_the_schema_defaults(db_dsn: str) -> None:
    async with (
        await AsyncConnection.connect(db_dsn) as connection,
        connection.transaction(),
    ):
        utils = AsyncWorkerUtils(connection=connection)
        job = await utils.add_raw_job("raw-task")
        cursor = await connection.execute("select now()")
        now_row = await cursor.fetchone()

    assert now_row is not None
    assert job.task_identifier == "raw-task"
    assert job.payload == {}
    assert job.queue_name is None and job.job_queue_id is None
    assert job.priority == 0
    assert job.run_at == now_row[0] == job.created_at
    assert job.max_attempts == SCHEMA_DEFAULT_MAX_ATTEMPTS
    assert job.flags is None
    assert job.key is None

    assert await stored(db_dsn, job.id) == as_stored(job)


@pytest.mark.anyio
async def test_add_raw_job_accepts_any_json_payload(db_dsn: str) -> None:
    payload = {"list": [1, 2.5, None, True], "text": "snow \u2603", "nested": {}}

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        job = await utils.add_raw_job("raw", payload, JobSpec(max_attempts=3))
        listed = await utils.add_raw_job("raw", [1, 2, 3])

    assert job.payload == payload
    assert job.max_attempts == 3
    assert listed.payload == [1, 2, 3]
    stored_job = await stored(db_dsn, job.id)
    assert stored_job is not None and stored_job["payload"] == payload


@pytest.mark.anyio
async def test_use_local_time_takes_run_at_from_this_machine(db_dsn: str) -> None:
    async with (
        await AsyncConnection.connect(db_dsn) as connection,
        connection.transaction(),
    ):
        # now() is frozen at the start of the transaction; let time move on.
        cursor = await connection.execute("select now() from pg_sleep(0.05)")
        now_row = await cursor.fetchone()
        before = datetime.now(UTC)
        local = AsyncWorkerUtils(connection=connection, use_local_time=True)
        job = await local.add_raw_job("local")
        jobs = await local.add_raw_jobs([RawJob(identifier="local")])
        after = datetime.now(UTC)
        remote = AsyncWorkerUtils(connection=connection)
        server_job = await remote.add_raw_job("remote")
        explicit = await local.add_raw_job("local", spec=JobSpec(run_at=FAR))

    assert now_row is not None
    assert before >= now_row[0] + timedelta(seconds=0.05)
    assert before <= job.run_at <= after
    assert before <= jobs[0].run_at <= after
    assert server_job.run_at == now_row[0]
    assert explicit.run_at == FAR


@pytest.mark.anyio
async def test_job_key_replaces_the_waiting_job(db_dsn: str) -> None:
    first_spec = JobSpec(
        job_key="k",
        queue_name="a",
        run_at=FAR,
        priority=1,
        max_attempts=3,
        flags=["x"],
    )
    second_spec = JobSpec(
        job_key="k",
        queue_name="b",
        run_at=FARTHER,
        priority=2,
        max_attempts=7,
        flags=["y"],
    )

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        first = await utils.add_raw_job("one", {"v": 1}, first_spec)
        await query(
            db_dsn,
            "update graphile_worker._private_jobs"
            " set attempts = 2, last_error = 'boom' where id = %s",
            [first.id],
        )
        second = await utils.add_raw_job("two", {"v": 2}, second_spec)

    assert second.id == first.id
    assert second.revision == first.revision + 1 == 1
    assert second.attempts == 0
    assert second.last_error is None
    assert second.payload == {"v": 2}
    assert second.task_identifier == "two"
    assert second.queue_name == "b"
    assert second.run_at == FARTHER
    assert second.priority == 2
    assert second.max_attempts == 7
    assert second.flags == {"y": True}
    assert await stored(db_dsn, first.id) == as_stored(second)
    assert await job_count(db_dsn) == 1


@pytest.mark.anyio
async def test_job_key_of_a_running_job_makes_a_new_job(db_dsn: str) -> None:
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        running = await utils.add_raw_job("t", {"v": 1}, JobSpec(job_key="k"))
        await lock_job(db_dsn, running.id)
        fresh = await utils.add_raw_job("t", {"v": 2}, JobSpec(job_key="k"))

    assert fresh.id != running.id
    assert fresh.key == "k" and fresh.revision == 0 and fresh.payload == {"v": 2}
    old = await stored(db_dsn, running.id)
    assert old is not None
    assert old["key"] is None
    assert old["attempts"] == old["max_attempts"]  # retired: never runs again
    assert old["payload"] == {"v": 1}


@pytest.mark.anyio
async def test_batch_jobs_with_one_key_concatenate_their_items(db_dsn: str) -> None:
    spec = JobSpec(job_key="batch-1")

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        first = await utils.add_batch_job([Item(1), Item(2)], spec)
        second = await utils.add_batch_job([Item(3)], spec)
        third = await utils.add_raw_jobs(
            [RawJob(identifier="batch", payload=[{"n": 4}], spec=spec)]
        )

    assert first.task_identifier == "batch"
    assert first.payload == [{"n": 1}, {"n": 2}]
    assert second.id == first.id
    assert second.payload == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert second.revision == 1
    assert third[0].id == first.id
    assert third[0].payload == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]
    stored_job = await stored(db_dsn, first.id)
    assert stored_job is not None
    assert stored_job["payload"] == [{"n": n} for n in (1, 2, 3, 4)]


@pytest.mark.anyio
async def test_job_key_replaces_an_array_with_an_object(db_dsn: str) -> None:
    spec = JobSpec(job_key="mixed")

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        await utils.add_raw_job("t", [1, 2], spec)
        job = await utils.add_raw_job("t", {"a": 1}, spec)

    assert job.payload == {"a": 1}


@pytest.mark.anyio
async def test_batch_job_refuses_empty_and_mixed_batches(db_dsn: str) -> None:
    async with counted(db_dsn) as (utils, statements):
        with pytest.raises(InvalidJobError, match="at least one item"):
            await utils.add_batch_job([])

        with pytest.raises(InvalidJobError, match="share one task"):
            await utils.add_batch_job([Item(1), Hello("x")])

    assert statements == []


@pytest.mark.anyio
async def test_preserve_run_at_keeps_an_unattempted_jobs_run_at(db_dsn: str) -> None:
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        first = await utils.add_raw_job("t", {"v": 1}, JobSpec(job_key="p", run_at=FAR))
        kept = await utils.add_raw_job(
            "t",
            {"v": 2},
            JobSpec(job_key="p", run_at=FARTHER, job_key_mode="preserve_run_at"),
        )
        await query(
            db_dsn,
            "update graphile_worker._private_jobs set attempts = 1 where id = %s",
            [first.id],
        )
        moved = await utils.add_raw_job(
            "t",
            {"v": 3},
            JobSpec(job_key="p", run_at=FARTHEST, job_key_mode="preserve_run_at"),
        )

    assert kept.id == first.id
    assert kept.run_at == FAR
    assert kept.payload == {"v": 2}
    assert kept.revision == 1
    assert moved.id == first.id
    assert moved.run_at == FARTHEST  # it had been attempted: run_at follows
    assert moved.attempts == 0


@pytest.mark.anyio
async def test_add_jobs_preserve_run_at(db_dsn: str) -> None:
    def spec(when: datetime) -> list[RawJob]:
        return [RawJob(identifier="t", spec=JobSpec(job_key="q", run_at=when))]

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        (first,) = await utils.add_raw_jobs(spec(FAR))
        (kept,) = await utils.add_raw_jobs(spec(FARTHER), preserve_run_at=True)
        (replaced,) = await utils.add_raw_jobs(spec(FARTHEST))

    assert kept.id == replaced.id == first.id
    assert kept.run_at == FAR
    assert replaced.run_at == FARTHEST
    assert replaced.revision == 2


ADD_JOBS_SQL: LiteralString = (
    "select id from graphile_worker.add_jobs(array(select spec from"
    " json_populate_recordset(null::graphile_worker.job_spec, %s::json) as spec),"
    " %s::boolean)"
)


@pytest.mark.anyio
@pytest.mark.parametrize("preserve_run_at", [False, True])
async def test_add_jobs_refuses_two_jobs_with_one_key_and_adds_nothing(
    db_dsn: str, preserve_run_at: bool
) -> None:
    keyed: list[tuple[str, int, str | None]] = [
        ("t", 0, "dup"),
        ("t", 1, "other"),
        ("t", 2, None),
        ("u", 3, "dup"),
    ]
    specs = [
        {"identifier": identifier, "payload": {"n": n}, "job_key": key}
        for identifier, n, key in keyed
    ]
    # The schema's own add_jobs, as graphile-worker's addJobs calls it, fails.
    with pytest.raises(psycopg.errors.CardinalityViolation, match="a second time"):
        await query(db_dsn, ADD_JOBS_SQL, [json.dumps(specs), preserve_run_at])

    jobs = [
        RawJob(identifier=identifier, payload={"n": n}, spec=JobSpec(job_key=key))
        for identifier, n, key in keyed
    ]
    async with AsyncWorkerUtils(dsn=db_dsn) as setup:
        existing = await setup.add_raw_job("t", {"old": True}, JobSpec(job_key="dup"))

    async with counted(db_dsn) as (utils, statements):
        with pytest.raises(
            InvalidJobError, match=r"^job 3: job_key 'dup' is also that of job 0"
        ):
            await utils.add_raw_jobs(jobs, preserve_run_at=preserve_run_at)

        with pytest.raises(InvalidJobError, match=r"^job 1: job_key 'dup'"):
            await utils.add_jobs(
                [
                    (Hello("a"), JobSpec(job_key="dup")),
                    (Hello("b"), JobSpec(job_key="dup")),
                ],
                preserve_run_at=preserve_run_at,
            )

        with pytest.raises(InvalidJobError, match=r"^job 1: job_key 'same'"):
            await utils.add_jobs([Hello("a"), Hello("b")], JobSpec(job_key="same"))

    assert statements == []
    assert await job_count(db_dsn) == 1
    assert await stored(db_dsn, existing.id) == as_stored(existing)


@pytest.mark.anyio
async def test_add_jobs_takes_distinct_keys_and_keyless_jobs_together(
    db_dsn: str,
) -> None:
    jobs = [
        RawJob(identifier="t", payload={"n": n}, spec=JobSpec(job_key=key))
        for n, key in enumerate(["a", None, "b", None])
    ]

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        added = await utils.add_raw_jobs(jobs)

    assert sorted((job.payload["n"], job.key) for job in added) == [
        (0, "a"),
        (1, None),
        (2, "b"),
        (3, None),
    ]
    assert await job_count(db_dsn) == 4


@pytest.mark.anyio
async def test_per_job_key_mode_is_refused_in_a_batch(db_dsn: str) -> None:
    job = RawJob(
        identifier="t", spec=JobSpec(job_key="k", job_key_mode="preserve_run_at")
    )

    async with counted(db_dsn) as (utils, statements):
        with pytest.raises(InvalidJobError, match="job_key_mode"):
            await utils.add_raw_jobs([job])

    assert statements == []


@pytest.mark.anyio
async def test_unsafe_dedupe_keeps_the_existing_job_even_if_running(
    db_dsn: str,
) -> None:
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        first = await utils.add_raw_job(
            "first", {"v": 1}, JobSpec(job_key="d", queue_name="q1", run_at=FAR)
        )
        await lock_job(db_dsn, first.id, "worker-1")
        again = await utils.add_raw_job(
            "second",
            {"v": 2},
            JobSpec(
                job_key="d",
                queue_name="q2",
                run_at=FARTHER,
                job_key_mode="unsafe_dedupe",
            ),
        )

    assert again.id == first.id
    assert again.revision == 1
    assert again.payload == {"v": 1}
    assert again.task_identifier == "first"  # the existing job's, not ours
    assert again.queue_name == "q1"
    assert again.run_at == FAR
    assert again.locked_by == "worker-1"
    assert await stored(db_dsn, first.id) == as_stored(again)
    assert await job_count(db_dsn) == 1


@pytest.mark.anyio
async def test_unsafe_dedupe_without_a_match_adds_a_job(db_dsn: str) -> None:
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        job = await utils.add_raw_job(
            "t", {"v": 1}, JobSpec(job_key="new", job_key_mode="unsafe_dedupe")
        )

    assert job.revision == 0
    assert job.task_identifier == "t"
    assert await stored(db_dsn, job.id) == as_stored(job)


@pytest.mark.anyio
async def test_remove_job(db_dsn: str) -> None:
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        job = await utils.add_raw_job("t", {"v": 1}, JobSpec(job_key="r1"))
        removed = await utils.remove_job("r1")
        unknown = await utils.remove_job("no-such-key")
        running = await utils.add_raw_job("t", {"v": 2}, JobSpec(job_key="r2"))
        await lock_job(db_dsn, running.id)
        retired = await utils.remove_job("r2")

    assert removed is not None
    assert removed.id == job.id
    assert removed.key == "r1"
    assert removed.task_identifier == "t"
    assert removed.payload == {"v": 1}
    assert await stored(db_dsn, job.id) is None
    assert unknown is None

    # A locked job cannot be deleted: it loses its key and its remaining tries.
    assert retired is not None and retired.id == running.id
    left = await stored(db_dsn, running.id)
    assert left is not None
    assert left["key"] is None
    assert left["attempts"] == left["max_attempts"]


@pytest.mark.anyio
async def test_complete_jobs_deletes_unlocked_jobs_only(db_dsn: str) -> None:
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        a = await utils.add_raw_job("a", spec=JobSpec(queue_name="qa"))
        b = await utils.add_raw_job("b")
        c = await utils.add_raw_job("c")
        await lock_job(db_dsn, c.id)
        done = await utils.complete_jobs([a.id, b.id, c.id, 999_999])

    assert sorted((job.id, job.task_identifier) for job in done) == [
        (a.id, "a"),
        (b.id, "b"),
    ]
    assert {job.id: job.queue_name for job in done} == {a.id: "qa", b.id: None}
    assert await stored(db_dsn, a.id) is None
    assert await stored(db_dsn, b.id) is None
    assert await stored(db_dsn, c.id) is not None


@pytest.mark.anyio
async def test_permanently_fail_jobs(db_dsn: str) -> None:
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        a = await utils.add_raw_job("a", spec=JobSpec(max_attempts=5))
        b = await utils.add_raw_job("b")
        c = await utils.add_raw_job("c")
        await lock_job(db_dsn, c.id)
        failed = await utils.permanently_fail_jobs([a.id, c.id])
        reasoned = await utils.permanently_fail_jobs([b.id], "no longer wanted")

    assert [job.id for job in failed] == [a.id]
    assert failed[0].last_error == MANUAL_FAILURE
    assert failed[0].attempts == 5 == failed[0].max_attempts
    assert reasoned[0].last_error == "no longer wanted"
    assert reasoned[0].attempts == SCHEMA_DEFAULT_MAX_ATTEMPTS

    stored_a, stored_c = await stored(db_dsn, a.id), await stored(db_dsn, c.id)
    assert stored_a is not None and stored_c is not None
    assert (stored_a["attempts"], stored_a["last_error"]) == (5, MANUAL_FAILURE)
    assert (stored_c["attempts"], stored_c["last_error"]) == (0, None)
    rows = await query(
        db_dsn,
        "select is_available from graphile_worker._private_jobs where id = %s",
        [a.id],
    )
    assert rows == [(False,)]


@pytest.mark.anyio
async def test_reschedule_jobs_changes_only_what_is_given(db_dsn: str) -> None:
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        a = await utils.add_raw_job("a", spec=JobSpec(run_at=FAR, priority=1))
        b = await utils.add_raw_job("b", spec=JobSpec(run_at=FAR))
        await lock_job(db_dsn, b.id)
        moved = await utils.reschedule_jobs(
            [a.id, b.id],
            run_at=FARTHER.astimezone(INDIA),
            priority=-3,
            attempts=2,
            max_attempts=9,
        )
        nudged = await utils.reschedule_jobs([a.id], priority=4)

    assert [job.id for job in moved] == [a.id]
    assert (moved[0].run_at, moved[0].priority) == (FARTHER, -3)
    assert (moved[0].attempts, moved[0].max_attempts) == (2, 9)
    assert (nudged[0].run_at, nudged[0].priority) == (FARTHER, 4)
    assert (nudged[0].attempts, nudged[0].max_attempts) == (2, 9)
    stored_b = await stored(db_dsn, b.id)
    assert stored_b is not None
    assert (stored_b["run_at"], stored_b["priority"]) == (FAR, 0)


@pytest.mark.anyio
async def test_reschedule_jobs_validates_before_sql(db_dsn: str) -> None:
    async with counted(db_dsn) as (utils, statements):
        with pytest.raises(InvalidJobError, match="priority"):
            await utils.reschedule_jobs([1], priority=40_000)

        with pytest.raises(InvalidJobError, match="attempts"):
            await utils.reschedule_jobs([1], attempts=-1)

        with pytest.raises(InvalidJobError, match="timezone"):
            await utils.reschedule_jobs([1], run_at=datetime(2100, 1, 1))

    assert statements == []


@pytest.mark.anyio
async def test_force_unlock_workers(db_dsn: str) -> None:
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        dead = await utils.add_raw_job("t", spec=JobSpec(queue_name="dead-q"))
        alive = await utils.add_raw_job("t", spec=JobSpec(queue_name="alive-q"))
        for job, worker in ((dead, "dead-worker"), (alive, "alive-worker")):
            await lock_job(db_dsn, job.id, worker)
            await query(
                db_dsn,
                "update graphile_worker._private_job_queues"
                " set locked_at = now(), locked_by = %s where id = %s",
                [worker, job.job_queue_id],
            )

        await utils.force_unlock_workers(["dead-worker", "never-existed"])

    jobs = await query(
        db_dsn,
        "select id, locked_by, locked_at is null from graphile_worker._private_jobs",
    )
    queues = await query(
        db_dsn,
        "select queue_name, locked_by, locked_at is null"
        " from graphile_worker._private_job_queues",
    )
    assert sorted(jobs) == [
        (dead.id, None, True),
        (alive.id, "alive-worker", False),
    ]
    assert sorted(queues) == [
        ("alive-q", "alive-worker", False),
        ("dead-q", None, True),
    ]


@pytest.mark.anyio
async def test_cleanup_deletes_permanently_failed_jobs(db_dsn: str) -> None:
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        failed = await utils.add_raw_job("t")
        failed_locked = await utils.add_raw_job("t")
        retrying = await utils.add_raw_job("t")
        await utils.permanently_fail_jobs([failed.id, failed_locked.id])
        await lock_job(db_dsn, failed_locked.id)
        await utils.reschedule_jobs([retrying.id], attempts=3)
        await utils.cleanup(["GC_JOB_QUEUES"])
        untouched = await job_count(db_dsn)
        await utils.cleanup(["DELETE_PERMAFAILED_JOBS"])

    assert untouched == 3
    rows = await query(db_dsn, "select id from graphile_worker._private_jobs")
    assert sorted(rows) == sorted([(failed_locked.id,), (retrying.id,)])


@pytest.mark.anyio
async def test_cleanup_gc_job_queues_ignores_jobs_without_a_queue(
    db_dsn: str,
) -> None:
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        await utils.add_raw_job("t", spec=JobSpec(queue_name="used"))
        unused = await utils.add_raw_job("t", spec=JobSpec(queue_name="unused"))
        locked = await utils.add_raw_job("t", spec=JobSpec(queue_name="locked"))
        await utils.add_raw_job("t")  # no queue: job_queue_id is NULL
        await utils.complete_jobs([unused.id, locked.id])
        await query(
            db_dsn,
            "update graphile_worker._private_job_queues"
            " set locked_at = now(), locked_by = 'w' where queue_name = 'locked'",
        )
        await utils.cleanup(["GC_JOB_QUEUES"])

    rows = await query(
        db_dsn, "select queue_name from graphile_worker._private_job_queues"
    )
    assert sorted(rows) == [("locked",), ("used",)]


@pytest.mark.anyio
async def test_cleanup_gc_task_identifiers_keeps_what_it_is_told(
    db_dsn: str,
) -> None:
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        await utils.add_raw_job("used")
        gone = await utils.add_raw_job("unused")
        kept = await utils.add_raw_job("keep-me")
        await utils.complete_jobs([gone.id, kept.id])
        await utils.cleanup(
            ["GC_TASK_IDENTIFIERS"], task_identifiers_to_keep=["keep-me"]
        )
        after_keep = await query(
            db_dsn, "select identifier from graphile_worker._private_tasks"
        )
        await utils.cleanup(["GC_TASK_IDENTIFIERS"])

    assert sorted(after_keep) == [("keep-me",), ("used",)]
    rows = await query(db_dsn, "select identifier from graphile_worker._private_tasks")
    assert rows == [("used",)]


@pytest.mark.anyio
async def test_cleanup_refuses_unknown_tasks(db_dsn: str) -> None:
    async with counted(db_dsn) as (utils, statements):
        with pytest.raises(ConfigurationError, match="GC_EVERYTHING"):
            await utils.cleanup(cast(Any, ["GC_EVERYTHING"]))

    assert statements == []


@pytest.mark.anyio
async def test_add_jobs_of_100000_specs_is_one_statement(db_dsn: str) -> None:
    jobs = [
        RawJob(identifier="bulk", payload={"i": i}, spec=JobSpec(queue_name="bulk-q"))
        for i in range(BULK_JOBS)
    ]

    async with counted(db_dsn) as (utils, statements):
        added = await utils.add_raw_jobs(jobs)

    assert len(statements) == 1
    assert len(added) == BULK_JOBS
    assert len({job.id for job in added}) == BULK_JOBS
    assert {job.payload["i"] for job in added} == set(range(BULK_JOBS))
    assert {(job.task_identifier, job.queue_name) for job in added} == {
        ("bulk", "bulk-q")
    }
    assert await job_count(db_dsn) == BULK_JOBS
    rows = await query(
        db_dsn,
        "select count(distinct (payload->>'i')::int), min((payload->>'i')::int),"
        " max((payload->>'i')::int) from graphile_worker._private_jobs",
    )
    assert rows == [(BULK_JOBS, 0, BULK_JOBS - 1)]


MIXED_JOBS = [
    RawJob(identifier="x", payload={"n": 0}, spec=JobSpec(queue_name="q-x")),
    RawJob(identifier="y", payload={"n": 1}),
    RawJob(identifier="x", payload={"n": 2}, spec=JobSpec(flags=["f"])),
]


@pytest.mark.anyio
async def test_add_jobs_of_mixed_tasks_names_each_job(db_dsn: str) -> None:
    tasks: list[Hello | tuple[Hello, JobSpec]] = [
        Hello("a"),
        (Hello("b"), JobSpec(queue_name="q-b", priority=2)),
    ]

    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        typed = await utils.add_jobs(tasks, JobSpec(priority=1))
        raw = await utils.add_raw_jobs(MIXED_JOBS)
        empty = await utils.add_raw_jobs([])

    assert sorted((j.payload["name"], j.queue_name, j.priority) for j in typed) == [
        ("a", None, 1),
        ("b", "q-b", 2),
    ]
    assert {j.task_identifier for j in typed} == {"hello"}
    by_n = {j.payload["n"]: j for j in raw}
    assert [
        (by_n[n].task_identifier, by_n[n].queue_name, by_n[n].flags) for n in range(3)
    ] == [("x", "q-x", None), ("y", None, None), ("x", None, {"f": True})]
    for job in [*typed, *raw]:
        assert await stored(db_dsn, job.id) == as_stored(job)

    assert empty == []


@pytest.mark.anyio
async def test_add_jobs_returns_every_job_given_in_no_set_order(db_dsn: str) -> None:
    # graphile-worker's add_jobs() returns rows in the order its join yields
    # them, so the documented promise is the set of jobs, each correctly named.
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        raw = await utils.add_raw_jobs(MIXED_JOBS)

    assert sorted(
        (job.task_identifier, str(job.queue_name), str(job.payload)) for job in raw
    ) == sorted(
        (job.identifier, str(job.spec.queue_name), str(job.payload))
        for job in MIXED_JOBS
    )


async def _call_every_method(
    utils: AsyncWorkerUtils, connection: AsyncConnection[Any], ids: dict[str, int]
) -> None:
    """Call each method once on ``connection``; each leaves a visible mark."""
    await utils.add_job(Hello("tx"), connection=connection)
    await utils.add_raw_job("tx-raw", connection=connection)
    await utils.add_jobs([Hello("tx-many")], connection=connection)
    await utils.add_raw_jobs([RawJob(identifier="tx-raws")], connection=connection)
    await utils.add_batch_job([Item(1)], connection=connection)
    await utils.reschedule_jobs([ids["base"]], priority=7, connection=connection)
    await utils.remove_job("removable", connection=connection)
    await utils.complete_jobs([ids["done"]], connection=connection)
    await utils.permanently_fail_jobs([ids["failing"]], connection=connection)
    await utils.force_unlock_workers(["holder"], connection=connection)
    await utils.cleanup(["DELETE_PERMAFAILED_JOBS"], connection=connection)
    await utils.cleanup(["GC_JOB_QUEUES", "GC_TASK_IDENTIFIERS"], connection=connection)


SNAPSHOT: LiteralString = (
    "select (select coalesce(json_agg(json_build_array(t.identifier, j.priority,"
    " j.key, j.locked_by, j.attempts) order by j.id), '[]')::text"
    " from graphile_worker._private_jobs j join graphile_worker._private_tasks t"
    " on t.id = j.task_id),"
    " (select coalesce(json_agg(identifier order by identifier), '[]')::text"
    " from graphile_worker._private_tasks),"
    " (select coalesce(json_agg(queue_name order by queue_name), '[]')::text"
    " from graphile_worker._private_job_queues)"
)


@pytest.mark.anyio
@pytest.mark.parametrize("commit", [False, True], ids=["rollback", "commit"])
async def test_every_method_joins_the_callers_transaction(
    db_dsn: str, commit: bool
) -> None:
    ids: dict[str, int] = {}
    async with AsyncWorkerUtils(dsn=db_dsn) as setup:
        for name, spec in [
            ("base", JobSpec(queue_name="kept-q")),
            ("done", JobSpec(queue_name="gone-q")),
            ("failing", JobSpec()),
            ("removable", JobSpec(job_key="removable")),
            ("held", JobSpec()),
        ]:
            ids[name] = (await setup.add_raw_job(name, spec=spec)).id

    await lock_job(db_dsn, ids["held"], "holder")
    before = await query(db_dsn, SNAPSHOT)

    async with counted(db_dsn) as (utils, statements):
        async with await AsyncConnection.connect(db_dsn) as connection:
            async with connection.transaction():
                await _call_every_method(utils, connection, ids)
                cursor = await connection.execute(SNAPSHOT)
                inside = await cursor.fetchall()
                if not commit:
                    raise Rollback()

    after = await query(db_dsn, SNAPSHOT)
    assert statements == []  # nothing went through the utilities' own database
    assert json.loads(inside[0][0]) == [
        ["base", 7, None, None, 0],
        ["held", 0, None, None, 0],
        ["hello", 0, None, None, 0],
        ["tx-raw", 0, None, None, 0],
        ["hello", 0, None, None, 0],
        ["tx-raws", 0, None, None, 0],
        ["batch", 0, None, None, 0],
    ]
    assert json.loads(inside[0][1]) == [
        "base",
        "batch",
        "held",
        "hello",
        "tx-raw",
        "tx-raws",
    ]
    assert json.loads(inside[0][2]) == ["kept-q"]
    assert after == (inside if commit else before)
    assert json.loads(before[0][2]) == ["gone-q", "kept-q"]


@pytest.mark.anyio
async def test_utilities_made_on_a_connection_join_its_transaction(
    db_dsn: str,
) -> None:
    async with await AsyncConnection.connect(db_dsn) as connection:
        utils = AsyncWorkerUtils(connection=connection)
        async with connection.transaction():
            await utils.add_raw_job("rolled-back")
            raise Rollback()

        async with connection.transaction():
            kept = await utils.add_raw_job("committed")

        await utils.close()  # the caller's connection stays open
        assert not connection.closed

    rows = await query(
        db_dsn,
        "select t.identifier from graphile_worker._private_jobs j"
        " join graphile_worker._private_tasks t on t.id = j.task_id",
    )
    assert rows == [("committed",)]
    assert (await stored(db_dsn, kept.id)) is not None


MAX_IDENTIFIER = "i" * 128
MAX_QUEUE = "q" * 128
MAX_KEY = "k" * 512

INVALID_JOBS: list[tuple[str, str, object, JobSpec, str]] = [
    ("identifier-129", "i" * 129, {}, JobSpec(), r"task identifier.*128.*129"),
    ("queue-129", "t", {}, JobSpec(queue_name="q" * 129), r"queue_name.*128.*129"),
    ("queue-empty", "t", {}, JobSpec(queue_name=""), r"queue_name.*1 to 128.*0"),
    ("key-empty", "t", {}, JobSpec(job_key=""), r"job_key.*1 to 512.*not 0"),
    ("key-513", "t", {}, JobSpec(job_key="k" * 513), r"job_key.*512.*513"),
    ("max-attempts-0", "t", {}, JobSpec(max_attempts=0), r"max_attempts.*1 and"),
    ("max-attempts-32768", "t", {}, JobSpec(max_attempts=32768), r"max_attempts"),
    ("priority-32768", "t", {}, JobSpec(priority=32768), r"priority.*32767"),
    ("priority-minus-32769", "t", {}, JobSpec(priority=-32769), r"priority.*-32768"),
    (
        "naive-run-at",
        "t",
        {},
        JobSpec(run_at=datetime(2100, 1, 1, 12, 0)),
        r"run_at must be timezone-aware",
    ),
    (
        "job-key-mode",
        "t",
        {},
        JobSpec(job_key="k", job_key_mode=cast(Any, "replace_all")),
        r"job_key_mode.*'replace_all'",
    ),
    ("nul-in-payload", "t", {"s": "a\x00b"}, JobSpec(), r"NUL"),
    ("nul-in-payload-key", "t", {"a\x00": 1}, JobSpec(), r"NUL"),
    ("nul-in-nested-list", "t", [["\x00"]], JobSpec(), r"NUL"),
    ("unencodable", "t", {"x": object()}, JobSpec(), r"cannot be encoded as JSON"),
    ("unencodable-complex", "t", [complex(1, 2)], JobSpec(), r"cannot be encoded"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("identifier", "payload", "spec", "message"),
    [case[1:] for case in INVALID_JOBS],
    ids=[case[0] for case in INVALID_JOBS],
)
async def test_invalid_jobs_are_refused_before_any_sql(
    db_dsn: str, identifier: str, payload: object, spec: JobSpec, message: str
) -> None:
    good = RawJob(identifier="fine")
    bad = RawJob(identifier=identifier, payload=payload, spec=spec)

    async with counted(db_dsn) as (utils, statements):
        with pytest.raises(InvalidJobError, match=message):
            await utils.add_raw_job(identifier, payload, spec)

        if spec.job_key_mode is None:  # a batch refuses any job_key_mode anyway
            with pytest.raises(InvalidJobError, match=r"^job 1: .*" + message):
                await utils.add_raw_jobs([good, bad])

    assert statements == []
    assert await job_count(db_dsn) == 0


NUL_IN_NAMES: list[tuple[str, str, JobSpec]] = [
    ("identifier", "a\x00b", JobSpec()),
    ("queue_name", "t", JobSpec(queue_name="a\x00b")),
    ("job_key", "t", JobSpec(job_key="a\x00b")),
    ("flags", "t", JobSpec(flags=["a\x00b"])),
]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("identifier", "spec"),
    [case[1:] for case in NUL_IN_NAMES],
    ids=[case[0] for case in NUL_IN_NAMES],
)
async def test_nul_in_a_name_is_refused_before_any_sql(
    db_dsn: str, identifier: str, spec: JobSpec
) -> None:
    async with counted(db_dsn) as (utils, statements):
        with pytest.raises(InvalidJobError, match="NUL"):
            await utils.add_raw_job(identifier, {}, spec)

    assert statements == []


@pytest.mark.anyio
async def test_add_job_refuses_a_struct_without_identifier(db_dsn: str) -> None:
    async with counted(db_dsn) as (utils, statements):
        with pytest.raises(InvalidJobError, match="NotATask has no class-level"):
            await utils.add_job(cast(Any, NotATask(1)))

    assert statements == []


@pytest.mark.anyio
async def test_values_at_the_limits_are_stored(db_dsn: str) -> None:
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        top = await utils.add_raw_job(
            MAX_IDENTIFIER,
            {"s": "\\u0000 is only text here"},
            JobSpec(
                queue_name=MAX_QUEUE,
                job_key=MAX_KEY,
                max_attempts=32767,
                priority=32767,
            ),
        )
        bottom = await utils.add_raw_job(
            "t", spec=JobSpec(max_attempts=1, priority=-32768)
        )

    assert await stored(db_dsn, top.id) == as_stored(top)
    assert top.task_identifier == MAX_IDENTIFIER
    assert top.queue_name == MAX_QUEUE
    assert top.key == MAX_KEY
    assert (top.max_attempts, top.priority) == (32767, 32767)
    assert top.payload == {"s": "\\u0000 is only text here"}
    assert await stored(db_dsn, bottom.id) == as_stored(bottom)
    assert (bottom.max_attempts, bottom.priority) == (1, -32768)


@pytest.mark.anyio
async def test_jobs_insert_is_notified_only_after_commit(db_dsn: str) -> None:
    async with (
        await AsyncConnection.connect(db_dsn, autocommit=True) as listener,
        await AsyncConnection.connect(db_dsn) as writer,
    ):
        await listener.execute('listen "jobs:insert"')
        utils = AsyncWorkerUtils(connection=writer)
        async with writer.transaction():
            await utils.add_raw_job("t")
            await utils.add_raw_jobs([RawJob(identifier="t"), RawJob(identifier="u")])
            early = [n async for n in listener.notifies(timeout=QUIET_WAIT)]

        late = [n async for n in listener.notifies(timeout=NOTIFY_WAIT, stop_after=2)]

    assert early == []
    assert [n.channel for n in late] == ["jobs:insert", "jobs:insert"]
    payloads = [json.loads(n.payload) for n in late]
    assert [payload["count"] for payload in payloads] == [1, 2]
    assert all(set(payload) == {"r", "count"} for payload in payloads)


TRIGGER_SQL: LiteralString = """
create table public.orders (id serial primary key, item text not null);
create function public.order_added() returns trigger language plpgsql as $$
begin
  perform graphile_worker.add_job('task', '{"a":1}');
  return new;
end;
$$;
create trigger order_added after insert on public.orders
  for each row execute function public.order_added();
"""


@pytest.mark.anyio
async def test_add_job_from_a_trigger_on_a_user_table(db_dsn: str) -> None:
    await query(db_dsn, TRIGGER_SQL)
    await query(db_dsn, "insert into public.orders (item) values ('x'), ('y')")
    await query(db_dsn, "select graphile_worker.add_job('task', '{\"a\":1}')")

    rows = await query(
        db_dsn, "select id from graphile_worker._private_jobs order by id"
    )
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        done = await utils.complete_jobs([row[0] for row in rows])

    assert len(rows) == 3
    assert [(job.task_identifier, job.payload) for job in done] == [
        ("task", {"a": 1})
    ] * 3
    assert await job_count(db_dsn) == 0


@pytest.mark.anyio
async def test_migrate_on_a_migrated_database_applies_nothing(db_dsn: str) -> None:
    async with AsyncWorkerUtils(dsn=db_dsn) as utils:
        applied = await utils.migrate()

    assert applied == []
    rows = await query(
        db_dsn, "select count(*), max(id) from graphile_worker.migrations"
    )
    assert rows == [(20, 20)]


BAD_SCHEMAS = [
    ("empty", "", "must not be empty"),
    ("64-ascii-bytes", "s" * 64, "is 64 bytes long"),
    ("64-utf8-bytes", "é" * 32, "is 64 bytes long"),
    ("nul", "a\x00b", "NUL"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("schema", "message"),
    [case[1:] for case in BAD_SCHEMAS],
    ids=[case[0] for case in BAD_SCHEMAS],
)
async def test_a_schema_name_postgresql_would_change_is_refused_everywhere(
    db_dsn: str, schema: str, message: str
) -> None:
    @task("hello")
    async def hello(payload: Hello, ctx: AsyncWorkerContext) -> None:
        pass

    options = WorkerOptions(schema=schema, tasks=[hello])  # checked by the worker

    async with counted(db_dsn) as (utils, statements):
        with pytest.raises(ConfigurationError, match=message):
            AsyncWorkerUtils(database=utils.database, schema=schema)

        with pytest.raises(ConfigurationError, match=message):
            AsyncWorkerUtils(dsn=db_dsn, schema=schema)

        with pytest.raises(ConfigurationError, match=message):
            AsyncWorker(options, database=utils.database)

        with pytest.raises(ConfigurationError, match=message):
            await migrate(utils.database, schema)

    assert statements == []
