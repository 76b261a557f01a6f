"""Task definitions that ``tests/test_cli.py`` loads with ``--tasks cli_tasks``.

Each task records its run as a row of the table ``cli_visits``, which the
test creates first: ``record_visit`` (an async Struct task, for AsyncWorker)
and ``record_visit_sync`` (an ``@task`` function, for the threaded Worker,
also listed in :data:`SYNC_TASKS` for ``--tasks cli_tasks:SYNC_TASKS``).
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from graphile_worker import AsyncWorkerContext, WorkerContext, task

CREATE_TABLE = "create table cli_visits (name text not null, how text not null)"
INSERT_VISIT = "insert into cli_visits (name, how) values (%s, %s)"


class Visit(msgspec.Struct, frozen=True):
    """A Struct task run by AsyncWorker."""

    IDENTIFIER: ClassVar[str] = "record_visit"
    name: str

    async def run(self, ctx: AsyncWorkerContext) -> None:
        """Insert a row for this visit."""
        await ctx.database.execute(INSERT_VISIT, [self.name, "async"])


class SyncVisit(msgspec.Struct, frozen=True):
    """The payload of ``record_visit_sync``."""

    name: str


@task("record_visit_sync")
def record_visit_sync(visit: SyncVisit, ctx: WorkerContext) -> None:
    """Insert a row for this visit, from the threaded Worker."""
    ctx.database.execute(INSERT_VISIT, [visit.name, "threaded"])


SYNC_TASKS = [record_visit_sync]
