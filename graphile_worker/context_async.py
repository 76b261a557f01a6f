"""``AsyncWorkerContext``: what the worker hands each task handler.

The context carries the decoded payload, the job, the worker's database and
settings, the extensions, an abort signal for shutdown, and helpers that add
jobs through the worker's own database, schema and settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar, final

from psycopg_pool import AsyncConnectionPool

from graphile_worker import _jobspec
from graphile_worker._acompat import AEvent
from graphile_worker.database_async import AsyncDatabase, AsyncPsycopgDatabase
from graphile_worker.events import Skip
from graphile_worker.extensions import Extensions
from graphile_worker.models import Job, JobSpec, RawJob, TaskPayload
from graphile_worker.utils_async import AsyncWorkerUtils

T = TypeVar("T")

# Rewrites or drops (with Skip) each job that a worker's helpers add.
ScheduleInterceptor = Callable[[RawJob], RawJob | Skip | None]

logger = logging.getLogger("graphile_worker.job")


@final
class AsyncWorkerContext:
    """The per-job context handed to each task handler.

    :ivar payload: the payload, decoded into the task's payload type.
    :ivar worker_id: the lock id of the worker pool running the job.
    :ivar schema: the graphile_worker schema name.
    :ivar abort_signal: set when shutdown's grace period runs out; long jobs
        should check it (or ``aborted``) and stop early.
    """

    __slots__ = (
        "_decode_job",
        "_job",
        "_logger",
        "_utils",
        "abort_signal",
        "before_schedule",
        "extensions",
        "payload",
        "schema",
        "worker_id",
    )

    def __init__(
        self,
        *,
        payload: Any,
        decode_job: Callable[[], Job],
        utils: AsyncWorkerUtils,
        worker_id: str,
        extensions: Extensions,
        abort_signal: AEvent,
        before_schedule: ScheduleInterceptor | None = None,
    ) -> None:
        self.payload = payload
        self._decode_job = decode_job
        self._job: Job | None = None
        self._utils = utils
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None
        self.schema = utils.schema
        self.worker_id = worker_id
        self.extensions = extensions
        self.abort_signal = abort_signal
        self.before_schedule = before_schedule

    @property
    def job(self) -> Job:
        """The job row being run (decoded on first use)."""
        if self._job is None:
            self._job = self._decode_job()

        return self._job

    @property
    def database(self) -> AsyncDatabase:
        """The worker's database."""
        return self._utils.database

    @property
    def pool(self) -> AsyncConnectionPool[Any] | None:
        """The worker's psycopg pool, when it runs on one."""
        database = self._utils.database
        return database.pool if isinstance(database, AsyncPsycopgDatabase) else None

    @property
    def aborted(self) -> bool:
        """Whether the worker has asked running jobs to stop."""
        return self.abort_signal.is_set()

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry the task, job id and worker id."""
        if self._logger is None:
            job = self.job
            self._logger = logging.LoggerAdapter(
                logger,
                {
                    "task": job.task_identifier,
                    "job_id": job.id,
                    "worker_id": self.worker_id,
                },
            )

        return self._logger

    def get_ext(self, kind: type[T]) -> T | None:
        """Return the extension stored for ``kind``, or ``None``."""
        return self.extensions.get_ext(kind)

    def utils(self) -> AsyncWorkerUtils:
        """Utilities on the worker's database, schema and clock setting."""
        return self._utils

    def _intercept(self, job: RawJob) -> RawJob | None:
        if self.before_schedule is None:
            return job

        verdict = self.before_schedule(job)
        if isinstance(verdict, Skip):
            return None

        return job if verdict is None else verdict

    async def add_job(
        self, task: TaskPayload, spec: JobSpec | None = None
    ) -> Job | None:
        """Add a typed job; ``None`` if ``before_job_schedule`` dropped it."""
        return await self.add_raw_job(_jobspec.identifier_of(task), task, spec)

    async def add_raw_job(
        self, identifier: str, payload: object = None, spec: JobSpec | None = None
    ) -> Job | None:
        """Add a job by identifier; ``None`` if ``before_job_schedule`` dropped it."""
        job = self._intercept(
            RawJob(
                identifier=identifier,
                payload={} if payload is None else payload,
                spec=spec or JobSpec(),
            )
        )
        if job is None:
            return None

        return await self._utils.add_raw_job(job.identifier, job.payload, job.spec)

    async def add_jobs(
        self,
        tasks: Iterable[TaskPayload | tuple[TaskPayload, JobSpec]],
        spec: JobSpec | None = None,
        *,
        preserve_run_at: bool = False,
    ) -> list[Job]:
        """Add typed jobs in one round trip (after ``before_job_schedule``)."""
        return await self.add_raw_jobs(
            _jobspec.raw_jobs_of(tasks, spec), preserve_run_at=preserve_run_at
        )

    async def add_raw_jobs(
        self, jobs: Iterable[RawJob], *, preserve_run_at: bool = False
    ) -> list[Job]:
        """Add jobs in one round trip (after ``before_job_schedule``)."""
        kept = [job for job in map(self._intercept, jobs) if job is not None]
        return await self._utils.add_raw_jobs(kept, preserve_run_at=preserve_run_at)

    async def add_batch_job(
        self, items: Sequence[TaskPayload], spec: JobSpec | None = None
    ) -> Job | None:
        """Add one batch job holding ``items``."""
        identifier, payload = _jobspec.batch_payload(items)
        return await self.add_raw_job(identifier, payload, spec)

    def __repr__(self) -> str:
        return f"<AsyncWorkerContext worker={self.worker_id}>"
