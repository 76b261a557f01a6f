"""A worker process for tests/test_worker_resilience.py, to kill and signal.

Usage: ``python tests/resilience_worker.py FLAVOUR TASK DSN [CONCURRENCY]``

* FLAVOUR: ``async`` (AsyncWorker under anyio) or ``threaded`` (Worker).
* TASK: ``sleepy`` writes the job id into ``markers`` and then sleeps for a
  minute; ``record`` writes its payload's ``n`` and the job id into ``results``
  (whose primary key catches a second run) after a few milliseconds.

The worker runs on the main thread with signal handling on, so SIGTERM stops
it gracefully; the process exits 0 once ``run()`` returns.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, ClassVar

import anyio
import msgspec

from graphile_worker import (
    AsyncWorker,
    AsyncWorkerContext,
    Worker,
    WorkerContext,
    WorkerOptions,
)

SLEEP = 60.0  # seconds a sleepy job sleeps
RECORD_WORK = 0.005  # seconds a record job spends before writing its result


class Sleepy(msgspec.Struct):
    IDENTIFIER: ClassVar[str] = "sleepy"

    def run(self, ctx: WorkerContext) -> None:
        ctx.database.execute("insert into markers (job_id) values (%s)", [ctx.job.id])
        time.sleep(SLEEP)


class AsyncSleepy(msgspec.Struct):
    IDENTIFIER: ClassVar[str] = "sleepy"

    async def run(self, ctx: AsyncWorkerContext) -> None:
        await ctx.database.execute(
            "insert into markers (job_id) values (%s)", [ctx.job.id]
        )
        await anyio.sleep(SLEEP)


class Record(msgspec.Struct):
    IDENTIFIER: ClassVar[str] = "record"

    n: int

    def run(self, ctx: WorkerContext) -> None:
        time.sleep(RECORD_WORK)
        ctx.database.execute(
            "insert into results (n, job_id) values (%s, %s)", [self.n, ctx.job.id]
        )


class AsyncRecord(msgspec.Struct):
    IDENTIFIER: ClassVar[str] = "record"

    n: int

    async def run(self, ctx: AsyncWorkerContext) -> None:
        await anyio.sleep(RECORD_WORK)
        await ctx.database.execute(
            "insert into results (n, job_id) values (%s, %s)", [self.n, ctx.job.id]
        )


TASKS: dict[tuple[str, str], Any] = {
    ("threaded", "sleepy"): Sleepy,
    ("async", "sleepy"): AsyncSleepy,
    ("threaded", "record"): Record,
    ("async", "record"): AsyncRecord,
}


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    flavour, task_name, dsn = argv[:3]
    concurrency = int(argv[3]) if len(argv) > 3 else 1
    options = WorkerOptions(
        dsn=dsn,
        tasks=[TASKS[flavour, task_name]],
        concurrency=concurrency,
        poll_interval=0.5,
    )
    if flavour == "threaded":
        with Worker(options) as worker:
            worker.run()

        return 0

    async def run_async() -> None:
        async with AsyncWorker(options) as worker:
            await worker.run()

    anyio.run(run_async)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
