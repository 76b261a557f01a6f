"""The data model: jobs as stored, and the specs used to add them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal, Protocol, final, runtime_checkable

import msgspec

JobKeyMode = Literal["replace", "preserve_run_at", "unsafe_dedupe"]


@runtime_checkable
class TaskPayload(Protocol):
    """A msgspec Struct that names its task with a class-level ``IDENTIFIER``."""

    IDENTIFIER: ClassVar[str]


@final
class Job(msgspec.Struct, frozen=True, kw_only=True):
    """A job row, with its task identifier and queue name resolved.

    ``payload`` is the decoded JSON payload; ``flags`` maps each flag to ``True``.
    """

    id: int
    job_queue_id: int | None
    queue_name: str | None
    task_id: int
    task_identifier: str
    payload: Any
    priority: int
    run_at: datetime
    attempts: int
    max_attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    key: str | None
    locked_at: datetime | None
    locked_by: str | None
    revision: int
    flags: dict[str, bool] | None


@final
class JobSpec(msgspec.Struct, frozen=True, kw_only=True):
    """How to schedule a job: every field is optional.

    :ivar queue_name: jobs sharing a queue name run one at a time, in order.
    :ivar run_at: the earliest time the job may run (timezone-aware).
    :ivar max_attempts: attempts before the job fails permanently (default 25).
    :ivar job_key: a unique name; adding a job with the same key updates it.
    :ivar job_key_mode: ``replace`` (default), ``preserve_run_at`` or
        ``unsafe_dedupe``.
    :ivar priority: lower numbers run first (default 0).
    :ivar flags: strings a worker may refuse with ``forbidden_flags``.
    """

    queue_name: str | None = None
    run_at: datetime | None = None
    max_attempts: int | None = None
    job_key: str | None = None
    job_key_mode: JobKeyMode | None = None
    priority: int | None = None
    flags: tuple[str, ...] | list[str] | None = None


@final
class RawJob(msgspec.Struct, frozen=True, kw_only=True):
    """One job for ``add_raw_jobs``: an identifier, any JSON payload, a spec."""

    identifier: str
    payload: Any = msgspec.field(default_factory=dict)
    spec: JobSpec = msgspec.field(default_factory=JobSpec)


DEFAULT_SPEC = JobSpec()
