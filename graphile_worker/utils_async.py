"""``AsyncWorkerUtils``: add jobs and administer the queue."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self, final

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from graphile_worker import _jobspec
from graphile_worker._connect import one_source, resolve_dsn
from graphile_worker._sql import DEFAULT_SCHEMA, queries
from graphile_worker.database_async import (
    AsyncDatabase,
    AsyncPsycopgDatabase,
    Row,
    as_database,
)
from graphile_worker.migrate_async import migrate
from graphile_worker.models import Job, JobSpec, RawJob, TaskPayload

CleanupTask = Literal["GC_TASK_IDENTIFIERS", "GC_JOB_QUEUES", "DELETE_PERMAFAILED_JOBS"]
CLEANUP_TASKS: tuple[CleanupTask, ...] = (
    "DELETE_PERMAFAILED_JOBS",
    "GC_JOB_QUEUES",
    "GC_TASK_IDENTIFIERS",
)
# As in graphile-worker: failed jobs are kept unless asked for by name.
DEFAULT_CLEANUP_TASKS: tuple[CleanupTask, ...] = (
    "GC_JOB_QUEUES",
    "GC_TASK_IDENTIFIERS",
)
UTILS_POOL_SIZE = 4  # connections in a pool that the utilities make from a DSN

Connectable = AsyncDatabase | AsyncConnectionPool[Any] | AsyncConnection[Any]

logger = logging.getLogger(__name__)


@final
class AsyncWorkerUtils:
    """Add jobs and manage the queue, on a DSN, a pool, a connection or a database.

    Every method takes ``connection=`` to run on a caller's own connection (and
    so inside its open transaction) instead.

    :param dsn: a libpq connection string; without any source, ``$DATABASE_URL``.
    :param pool: a caller's ``AsyncConnectionPool``, left open on close.
    :param connection: a caller's ``AsyncConnection``.
    :param database: any :class:`~graphile_worker.database_async.AsyncDatabase`.
    :param schema: the graphile_worker schema name, at most 63 bytes long.
    :param use_local_time: take ``run_at`` from this machine's clock rather than
        the database's when a job does not set one.
    :raises ConfigurationError: more than one source, or a schema name
        PostgreSQL would refuse or truncate.
    """

    def __init__(
        self,
        *,
        dsn: str | None = None,
        pool: AsyncConnectionPool[Any] | None = None,
        connection: AsyncConnection[Any] | None = None,
        database: AsyncDatabase | None = None,
        schema: str = DEFAULT_SCHEMA,
        use_local_time: bool = False,
    ) -> None:
        one_source(dsn=dsn, pool=pool, connection=connection, database=database)
        self._sql = queries(schema)
        source = pool or connection or database
        if source is None:
            self._database: AsyncDatabase = AsyncPsycopgDatabase.from_dsn(
                resolve_dsn(dsn), max_size=UTILS_POOL_SIZE
            )
        else:
            self._database = as_database(source)

        self._owned = source is None
        self.schema = schema
        self.use_local_time = use_local_time

    @property
    def database(self) -> AsyncDatabase:
        """The database these utilities run on."""
        return self._database

    async def open(self) -> Self:
        """Open the pool these utilities made from a DSN (a no-op otherwise)."""
        if self._owned and isinstance(self._database, AsyncPsycopgDatabase):
            await self._database.open()

        return self

    async def close(self) -> None:
        """Close what these utilities own; a caller's pool or connection stays."""
        if self._owned:
            await self._database.close()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _on(self, connection: Connectable | None) -> AsyncDatabase:
        return self._database if connection is None else as_database(connection)

    async def migrate(self) -> list[int]:
        """Install or upgrade the schema; return the migration ids applied."""
        return await migrate(self._database, self.schema)

    async def add_job(
        self,
        task: TaskPayload,
        spec: JobSpec | None = None,
        *,
        connection: Connectable | None = None,
    ) -> Job:
        """Add a job whose payload is a task Struct with an ``IDENTIFIER``.

        :raises InvalidJobError: the task or spec cannot be stored.
        """
        return await self.add_raw_job(
            _jobspec.identifier_of(task), task, spec, connection=connection
        )

    async def add_raw_job(
        self,
        identifier: str,
        payload: object = None,
        spec: JobSpec | None = None,
        *,
        connection: Connectable | None = None,
    ) -> Job:
        """Add a job for ``identifier`` with any JSON-able payload (default ``{}``).

        :raises InvalidJobError: the identifier, spec or payload cannot be stored.
        """
        params = _jobspec.add_job_params(
            identifier,
            {} if payload is None else payload,
            spec,
            use_local_time=self.use_local_time,
        )
        database = self._on(connection)
        row = await database.fetch_one(self._sql.add_job, params)
        assert row is not None
        if params["job_key_mode"] == "unsafe_dedupe":
            (job,) = await self._named(database, [row], None)
        else:
            (job,) = await self._named(
                database, [row], (identifier, params["queue_name"])
            )

        logger.debug(
            "Added job %d (%s)",
            job.id,
            identifier,
            extra={"action": "job_add", "job_id": job.id, "task": identifier},
        )
        return job

    async def add_jobs(
        self,
        tasks: Iterable[TaskPayload | tuple[TaskPayload, JobSpec]],
        spec: JobSpec | None = None,
        *,
        preserve_run_at: bool = False,
        connection: Connectable | None = None,
    ) -> list[Job]:
        """Add many typed jobs in one round trip.

        :param tasks: task Structs, each alone (taking ``spec``) or paired with
            a spec of its own.
        :param preserve_run_at: on a job key match, keep the existing job's
            ``run_at`` if it has not been attempted yet.
        :raises InvalidJobError: as :meth:`add_raw_jobs`.
        """
        return await self.add_raw_jobs(
            _jobspec.raw_jobs_of(tasks, spec),
            preserve_run_at=preserve_run_at,
            connection=connection,
        )

    async def add_raw_jobs(
        self,
        jobs: Iterable[RawJob],
        *,
        preserve_run_at: bool = False,
        connection: Connectable | None = None,
    ) -> list[Job]:
        """Add many jobs of any identifiers and payloads in one round trip.

        :returns: the jobs, in no particular order (as graphile-worker's
            ``add_jobs`` returns them); match them up by ``key`` or ``id``.
        :raises InvalidJobError: a job that cannot be stored, or two jobs with
            one ``job_key``; nothing is added.
        """
        jobs = list(jobs)
        document, count = _jobspec.add_jobs_document(
            jobs, use_local_time=self.use_local_time
        )
        if count == 0:
            return []

        database = self._on(connection)
        rows = await database.fetch(
            self._sql.add_jobs,
            {"specs": document.decode(), "preserve_run_at": preserve_run_at},
        )
        names = _jobspec.names_from_specs(
            (job.identifier for job in jobs), (job.spec.queue_name for job in jobs)
        )
        logger.debug("Added %d jobs", len(rows), extra={"action": "jobs_add"})
        return await self._named(database, rows, names)

    async def _named(
        self,
        database: AsyncDatabase,
        rows: list[Row],
        names: tuple[str, str | None] | None,
    ) -> list[Job]:
        """Decode rows of the add queries, asking for names only when needed."""
        if names is not None:
            identifier, queue_name = names
            tasks = {row[3]: identifier for row in rows}
            queues = {row[1]: queue_name for row in rows if queue_name is not None}
        else:
            tasks, queues = _jobspec.split_names(
                await database.fetch(self._sql.job_names, _jobspec.name_ids(rows))
            )

        return [_jobspec.job_from_row(row, tasks, queues) for row in rows]

    async def add_batch_job(
        self,
        items: Sequence[TaskPayload],
        spec: JobSpec | None = None,
        *,
        connection: Connectable | None = None,
    ) -> Job:
        """Add one job whose payload is the list of ``items`` for a batch task.

        With a ``job_key``, items added while the job waits join its list.
        """
        identifier, payload = _jobspec.batch_payload(items)
        return await self.add_raw_job(identifier, payload, spec, connection=connection)

    async def remove_job(
        self, job_key: str, *, connection: Connectable | None = None
    ) -> Job | None:
        """Remove the job with this key, or stop it retrying if it is running.

        :returns: the job that was removed or stopped, or ``None``.
        :raises InvalidJobError: the key cannot be stored.
        """
        _jobspec.check_spec(JobSpec(job_key=job_key))
        row = await self._on(connection).fetch_one(
            self._sql.remove_job, {"job_key": job_key}
        )
        return None if row is None or row[0] is None else _jobspec.job_from_row(row)

    async def complete_jobs(
        self, ids: Iterable[int], *, connection: Connectable | None = None
    ) -> list[Job]:
        """Mark unlocked jobs as done (deleting them); return those deleted."""
        rows = await self._on(connection).fetch(
            self._sql.complete_jobs, {"ids": list(ids)}
        )
        return [_jobspec.job_from_row(row) for row in rows]

    async def permanently_fail_jobs(
        self,
        ids: Iterable[int],
        reason: str | None = None,
        *,
        connection: Connectable | None = None,
    ) -> list[Job]:
        """Fail unlocked jobs for good, recording ``reason``; return them."""
        rows = await self._on(connection).fetch(
            self._sql.permanently_fail_jobs, {"ids": list(ids), "message": reason}
        )
        return [_jobspec.job_from_row(row) for row in rows]

    async def reschedule_jobs(
        self,
        ids: Iterable[int],
        *,
        run_at: datetime | None = None,
        priority: int | None = None,
        attempts: int | None = None,
        max_attempts: int | None = None,
        connection: Connectable | None = None,
    ) -> list[Job]:
        """Change when and how unlocked jobs run; ``None`` keeps a field as is.

        :raises InvalidJobError: a value the schema cannot store.
        """
        _jobspec.check_spec(
            JobSpec(run_at=run_at, priority=priority, max_attempts=max_attempts)
        )
        if attempts is not None:
            _jobspec.check_attempts(attempts)

        rows = await self._on(connection).fetch(
            self._sql.reschedule_jobs,
            {
                "ids": list(ids),
                "run_at": run_at,
                "priority": priority,
                "attempts": attempts,
                "max_attempts": max_attempts,
            },
        )
        return [_jobspec.job_from_row(row) for row in rows]

    async def force_unlock_workers(
        self, worker_ids: Iterable[str], *, connection: Connectable | None = None
    ) -> None:
        """Unlock the jobs and queues held by workers that are known to be dead."""
        await self._on(connection).execute(
            self._sql.force_unlock_workers,
            {"worker_ids": _jobspec.check_texts(worker_ids, "worker_ids")},
        )

    async def cleanup(
        self,
        tasks: Iterable[CleanupTask] = DEFAULT_CLEANUP_TASKS,
        *,
        task_identifiers_to_keep: Iterable[str] = (),
        connection: Connectable | None = None,
    ) -> None:
        """Delete permanently failed jobs, unused queues and unused task names.

        :param tasks: which of ``CLEANUP_TASKS`` to run (they run in that
            order); by default the two garbage collections, keeping failed jobs.
        :param task_identifiers_to_keep: task names never garbage-collected.
        :raises ConfigurationError: an unknown cleanup task.
        """
        wanted = _jobspec.check_cleanup_tasks(tasks, CLEANUP_TASKS)
        database = self._on(connection)
        if "DELETE_PERMAFAILED_JOBS" in wanted:
            await database.execute(self._sql.delete_permafailed_jobs)

        if "GC_JOB_QUEUES" in wanted:
            await database.execute(self._sql.gc_job_queues)

        if "GC_TASK_IDENTIFIERS" in wanted:
            await database.execute(
                self._sql.gc_task_identifiers,
                {
                    "keep": _jobspec.check_texts(
                        task_identifiers_to_keep, "task_identifiers_to_keep"
                    )
                },
            )
