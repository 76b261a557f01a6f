"""A PostgreSQL job queue for Python, schema-compatible with Graphile Worker 0.18.

Add jobs from Python (:class:`WorkerUtils`, :class:`AsyncWorkerUtils`) or from
SQL (``select graphile_worker.add_job(...)``), and run them with a worker.
"""

from __future__ import annotations

import logging

from graphile_worker._migrations import LATEST_MIGRATION
from graphile_worker._sql import DEFAULT_SCHEMA
from graphile_worker.context import WorkerContext
from graphile_worker.context_async import AsyncWorkerContext
from graphile_worker.cron import CronItem, cron, parse_crontab
from graphile_worker.database import Database, PsycopgDatabase
from graphile_worker.database_async import (
    AsyncDatabase,
    AsyncPsycopgDatabase,
    Notification,
)
from graphile_worker.errors import (
    ConfigurationError,
    CrontabError,
    DatabaseConnectionError,
    DatabaseError,
    GraphileWorkerError,
    InvalidJobError,
    MigrationError,
    PayloadDecodeError,
    SchemaTooNewError,
    SchemaTooOldError,
    UnsupportedServerError,
)
from graphile_worker.events import EVENT_NAMES, Events, Fail, JobResult, Skip
from graphile_worker.extensions import Extensions
from graphile_worker.models import Job, JobKeyMode, JobSpec, RawJob, TaskPayload
from graphile_worker.options import WorkerOptions
from graphile_worker.task import TaskHandler, task
from graphile_worker.utils import WorkerUtils
from graphile_worker.utils_async import CLEANUP_TASKS, AsyncWorkerUtils, CleanupTask
from graphile_worker.worker import Worker
from graphile_worker.worker_async import AsyncWorker

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "CLEANUP_TASKS",
    "DEFAULT_SCHEMA",
    "EVENT_NAMES",
    "LATEST_MIGRATION",
    "AsyncDatabase",
    "AsyncPsycopgDatabase",
    "AsyncWorker",
    "AsyncWorkerContext",
    "AsyncWorkerUtils",
    "CleanupTask",
    "ConfigurationError",
    "CronItem",
    "CrontabError",
    "Database",
    "DatabaseConnectionError",
    "DatabaseError",
    "Events",
    "Extensions",
    "Fail",
    "GraphileWorkerError",
    "InvalidJobError",
    "Job",
    "JobKeyMode",
    "JobResult",
    "JobSpec",
    "MigrationError",
    "Notification",
    "PayloadDecodeError",
    "PsycopgDatabase",
    "RawJob",
    "SchemaTooNewError",
    "SchemaTooOldError",
    "Skip",
    "TaskHandler",
    "TaskPayload",
    "UnsupportedServerError",
    "Worker",
    "WorkerContext",
    "WorkerOptions",
    "WorkerUtils",
    "cron",
    "parse_crontab",
    "task",
]
