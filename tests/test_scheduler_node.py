"""Our cron schedulers and Node's, on one database, add each minute's job once.

A Node graphile-worker 0.18.0 runner (``run()`` with a ``crontab``) and two of
our workers, one :class:`AsyncWorker` and one threaded :class:`Worker`, all
schedule ``* * * * * tick`` on the machine's clock. No one runs ``tick``, so
its jobs stay in the table. After two minute boundaries have passed with all
three schedulers running, every minute has exactly one ``tick`` job, with the
payload Node writes, and ``last_execution`` is the latest of those minutes.

The test waits for real minutes: it takes from 65 to 130 seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from graphile_worker import (
    AsyncWorker,
    AsyncWorkerContext,
    Worker,
    WorkerContext,
    WorkerOptions,
    task,
)
from tests.test_node_compat import LATEST, graphile_worker_bin, node_dsn

pytestmark = pytest.mark.node

CRONTAB = "* * * * * tick"
START_TIMEOUT = 60.0  # seconds for every scheduler to start
STOP_TIMEOUT = 30.0  # seconds for each worker to stop
SLACK = timedelta(seconds=5)  # after a boundary, for its jobs to be added
MINUTE = timedelta(minutes=1)

NODE_CRON_WORKER = """\
import { EventEmitter } from "node:events";
import { pathToFileURL } from "node:url";

const { run } = await import(
  pathToFileURL(process.env.GRAPHILE_WORKER_MODULE).href
);
const events = new EventEmitter();
events.on("cron:started", () => console.log("EVENT cron:started"));
events.on("cron:scheduled", ({ timestamp }) =>
  console.log("EVENT cron:scheduled " + new Date(timestamp).toISOString())
);
const runner = await run({
  connectionString: process.env.DATABASE_URL,
  concurrency: 1,
  pollInterval: 500,
  noHandleSignals: true,
  taskList: { other: async () => {} },
  crontab: process.env.CRONTAB,
  events,
});
process.on("SIGTERM", () => {
  runner.stop().then(
    () => process.exit(0),
    () => process.exit(1)
  );
});
await runner.promise;
"""


def js_iso(moment: datetime) -> str:
    """A whole UTC minute as JavaScript's ``toISOString()`` writes it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") + ":00.000Z"


def next_minute(moment: datetime) -> datetime:
    """The first whole minute strictly after ``moment``."""
    return moment.replace(second=0, microsecond=0) + MINUTE


@contextmanager
def node_cron_worker(
    dsn: str, folder: Path, lines: queue.Queue[str]
) -> Iterator[subprocess.Popen[str]]:
    """Run the Node runner; its output lines go to ``lines``; stop it after."""
    module = graphile_worker_bin(LATEST).parent.parent / "graphile-worker"
    script = folder / "cron_worker.mjs"
    script.write_text(NODE_CRON_WORKER)
    process = subprocess.Popen(
        ["node", str(script)],
        cwd=folder,
        env={
            **os.environ,
            "DATABASE_URL": node_dsn(dsn),
            "GRAPHILE_WORKER_MODULE": str(module / "dist" / "index.js"),
            "CRONTAB": CRONTAB,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))

    reader = threading.Thread(target=pump, name="node-output", daemon=True)
    reader.start()
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)
        reader.join(STOP_TIMEOUT)
        if process.stdout is not None:
            process.stdout.close()


def drain(lines: queue.Queue[str], into: list[str]) -> list[str]:
    while True:
        try:
            into.append(lines.get_nowait())
        except queue.Empty:
            return into


def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


@task("other")
def other(payload: Any, ctx: WorkerContext) -> None:
    """A task for the workers; no one runs ``tick``."""


@task("other")
async def other_async(payload: Any, ctx: AsyncWorkerContext) -> None:
    """The async worker's ``other``."""


class Watched:
    """A worker's options, with the cron events it emits recorded."""

    def __init__(self, dsn: str, handler: object) -> None:
        self.options = WorkerOptions(
            dsn=dsn,
            tasks=[handler],
            crontab=CRONTAB,
            concurrency=1,
            poll_interval=0.5,
            handle_signals=False,
        )
        self.started = threading.Event()
        self.scheduled: list[Mapping[str, Any]] = []
        self.options.events.on("cron:started", lambda details: self.started.set())
        self.options.events.on("cron:scheduled", self.scheduled.append)

    def attempted(self) -> set[datetime]:
        return {details["timestamp"] for details in self.scheduled}


@pytest.mark.timeout(240)
def test_node_and_our_workers_add_one_tick_per_minute(
    db_dsn: str, tmp_path: Path
) -> None:
    threaded = Watched(db_dsn, other)
    asynchronous = Watched(db_dsn, other_async)
    sync_worker = Worker(threaded.options)
    async_worker = AsyncWorker(asynchronous.options)
    errors: list[BaseException] = []

    def guarded(target: Callable[[], object]) -> Callable[[], None]:
        def body() -> None:
            try:
                target()
            except BaseException as exc:
                errors.append(exc)

        return body

    threads = [
        threading.Thread(target=guarded(sync_worker.run), name="py-threaded"),
        threading.Thread(
            target=guarded(lambda: asyncio.run(async_worker.run())), name="py-async"
        ),
    ]
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []
    with node_cron_worker(db_dsn, tmp_path, lines) as node:
        for thread in threads:
            thread.start()
        try:
            assert wait_until(
                lambda: (
                    "EVENT cron:started" in drain(lines, output)
                    and threaded.started.is_set()
                    and asynchronous.started.is_set()
                ),
                START_TIMEOUT,
            ), "\n".join(output)
            first = next_minute(datetime.now(UTC))
            second = first + MINUTE
            pause = (second + SLACK - datetime.now(UTC)).total_seconds()
            time.sleep(max(pause, 0.0))
            assert node.poll() is None, "\n".join(drain(lines, output))
        finally:
            async_worker.stop()
            sync_worker.stop()
            for thread in threads:
                thread.join(STOP_TIMEOUT)

    assert errors == []
    assert not any(thread.is_alive() for thread in threads)
    with psycopg.connect(db_dsn) as connection:
        ticks = connection.execute(
            "select jobs.run_at, jobs.payload::text"
            " from graphile_worker._private_jobs as jobs"
            " join graphile_worker._private_tasks as tasks on tasks.id = jobs.task_id"
            " where tasks.identifier = 'tick' order by jobs.run_at"
        ).fetchall()
        known = connection.execute(
            "select identifier, last_execution"
            " from graphile_worker._private_known_crontabs"
        ).fetchall()

    minutes: list[datetime] = [run_at for run_at, _ in ticks]
    assert len(set(minutes)) == len(minutes), minutes  # one job per minute
    assert first in minutes and second in minutes
    assert minutes == [minutes[0] + n * MINUTE for n in range(len(minutes))]
    for run_at, payload in ticks:
        assert json.loads(payload) == {
            "_cron": {"ts": js_iso(run_at), "backfilled": False}
        }
    assert known == [("tick", minutes[-1])]

    # All three schedulers went for both minutes.
    node_scheduled = drain(lines, output)
    for moment in (first, second):
        assert f"EVENT cron:scheduled {js_iso(moment)}" in node_scheduled
        assert moment in threaded.attempted()
        assert moment in asynchronous.attempted()
