"""Workers against the worst: SIGKILL, SIGTERM mid-run, killed connections, restarts.

Worker processes run ``tests/resilience_worker.py``; in-process workers of both
flavours run on a thread of their own. The restart tests start a private
embedded PostgreSQL in a temporary data directory, never the shared server.

What must hold is graphile-worker's promise: a job is never lost and never
completed twice. A job a dead worker held stays locked by that worker's pool
id until ``force_unlock_workers`` (or four hours) frees it.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, LiteralString

import anyio
import anyio.to_thread
import msgspec
import psycopg
import pytest
from psycopg import sql

from graphile_worker import (
    AsyncWorker,
    AsyncWorkerContext,
    Worker,
    WorkerContext,
    WorkerOptions,
    WorkerUtils,
)
from graphile_worker.embedded import EmbeddedServer

SCRIPT = Path(__file__).with_name("resilience_worker.py")
ROOT = SCRIPT.parent.parent
FLAVOURS = ["async", "threaded"]
WAIT = 20.0  # seconds: the most any condition is waited for
POLL = 0.01  # seconds between checks
RECOVERY_LIMIT = 3.0  # seconds a job added after an outage may take to run
NOTIFY_LIMIT = 2.0  # seconds a NOTIFY may take to wake a listening worker
BUSY_JOBS = 2000
SIGNAL_AFTER = 200  # results written before the SIGTERM
EXIT_WAIT = 30.0  # seconds a signalled worker process may take to exit


def query(dsn: str, statement: LiteralString, params: Any = None) -> list[Any]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        cursor = connection.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def wait_for(condition: Callable[[], object], seconds: float = WAIT) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() >= deadline:
            return False

        time.sleep(POLL)

    return True


class WorkerProcess:
    """``resilience_worker.py`` in a process of its own, logging to a file."""

    def __init__(
        self, log: Path, flavour: str, task: str, dsn: str, concurrency: int = 1
    ) -> None:
        self.log = log
        with log.open("w") as output:
            self.process = subprocess.Popen(
                [sys.executable, str(SCRIPT), flavour, task, dsn, str(concurrency)],
                cwd=ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def signal(self, signum: int) -> int:
        """Send ``signum``; return the exit status once the process is gone."""
        self.process.send_signal(signum)
        return self.process.wait(EXIT_WAIT)

    def output(self) -> str:
        """Kill the process if it still runs; return what it logged."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(EXIT_WAIT)

        return self.log.read_text()


class Background:
    """A worker of either flavour, run on a thread of its own.

    The async one is built inside its event loop (anyio primitives need one).
    """

    def __init__(self, flavour: str, settings: WorkerOptions) -> None:
        self.flavour = flavour
        self.settings = settings
        self.listens = 0
        self.errors: list[BaseException] = []
        self._worker: AsyncWorker | Worker | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"bg-{flavour}")
        settings.events.on("pool:listen:success", self._on_listen)

    def _on_listen(self, details: object) -> None:
        self.listens += 1

    def _main(self) -> None:
        try:
            if self.flavour == "threaded":
                worker = Worker(self.settings)
                self._worker = worker
                self._ready.set()
                with worker:
                    worker.run()
            else:
                anyio.run(self._main_async)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            self._ready.set()

    async def _main_async(self) -> None:
        worker = AsyncWorker(self.settings)
        self._worker = worker
        self._ready.set()
        async with worker:
            await worker.run()

    def __enter__(self) -> Background:
        self._thread.start()
        assert self._ready.wait(WAIT)
        assert wait_for(lambda: self.listens > 0), "the worker never listened"
        return self

    def alive(self) -> bool:
        return self._thread.is_alive()

    def __exit__(self, *exc_info: object) -> None:
        if self._worker is not None:
            self._worker.stop()

        self._thread.join(WAIT)
        assert not self._thread.is_alive(), "the worker did not stop"
        if self.errors:
            raise self.errors[0]


def hello_tasks(
    flavour: str, ran: list[tuple[int, float]], gate: threading.Event
) -> object:
    """A ``hello`` task of the flavour that records (n, when) as each starts.

    Jobs with a negative ``n`` then wait for ``gate`` before they finish.
    """

    class SyncHello(msgspec.Struct):
        IDENTIFIER: ClassVar[str] = "hello"

        n: int

        def run(self, ctx: WorkerContext) -> None:
            ran.append((self.n, time.monotonic()))
            if self.n < 0:
                assert gate.wait(WAIT)

    class AsyncHello(msgspec.Struct):
        IDENTIFIER: ClassVar[str] = "hello"

        n: int

        async def run(self, ctx: AsyncWorkerContext) -> None:
            ran.append((self.n, time.monotonic()))
            if self.n < 0:
                assert await anyio.to_thread.run_sync(gate.wait, WAIT)

    return SyncHello if flavour == "threaded" else AsyncHello


def add_hello(dsn: str, n: int) -> None:
    query(
        dsn,
        "select graphile_worker.add_job('hello', json_build_object('n', %s::int))",
        [n],
    )


def jobs_left(dsn: str) -> int:
    (row,) = query(dsn, "select count(*) from graphile_worker._private_jobs")
    return int(row[0])


def ran_within(ran: list[tuple[int, float]], n: int, since: float) -> float:
    """Seconds from ``since`` until job ``n`` started, waiting until it has."""
    assert wait_for(lambda: any(m == n for m, _ in ran)), f"job {n} never ran"
    return next(when for m, when in ran if m == n) - since


def assert_listens_again(
    background: Background, dsn: str, ran: list[tuple[int, float]]
) -> None:
    """The worker listens anew, and a NOTIFY wakes it long before it polls."""
    assert wait_for(lambda: background.listens >= 2)
    added = time.monotonic()
    add_hello(dsn, 3)
    assert ran_within(ran, 3, added) < NOTIFY_LIMIT
    assert background.alive()


# -- (a) SIGKILL mid-job ------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_job_of_a_killed_worker_waits_for_force_unlock(
    db_dsn: str, flavour: str, tmp_path: Path
) -> None:
    query(db_dsn, "create table markers (job_id bigint primary key)")
    query(
        db_dsn,
        "select graphile_worker.add_job('sleepy', '{}', queue_name => 'q')",
    )
    dead = WorkerProcess(tmp_path / "worker.log", flavour, "sleepy", db_dsn)
    try:
        started = wait_for(lambda: query(db_dsn, "select 1 from markers"))
        assert started, dead.output()
        assert dead.signal(signal.SIGKILL) == -signal.SIGKILL
    finally:
        dead.output()

    ((job_id, attempts, pool_id, locked_at),) = query(
        db_dsn,
        "select id, attempts, locked_by, locked_at from graphile_worker._private_jobs",
    )
    assert query(db_dsn, "select job_id from markers") == [(job_id,)]
    assert attempts == 1
    assert pool_id.startswith("pool-") and locked_at is not None
    queue_lock = "select locked_by from graphile_worker._private_job_queues"
    assert query(db_dsn, queue_lock) == [(pool_id,)]

    ran: list[int] = []

    class Sleepy(msgspec.Struct):
        IDENTIFIER: ClassVar[str] = "sleepy"

        def run(self, ctx: WorkerContext) -> None:
            ran.append(ctx.job.id)

    settings = WorkerOptions(dsn=db_dsn, tasks=[Sleepy], handle_signals=False)
    with Worker(settings) as worker:
        worker.run_once()  # the job is still locked: nothing to run

    assert ran == []

    with WorkerUtils(dsn=db_dsn) as utils:
        utils.force_unlock_workers([pool_id])

    assert query(db_dsn, queue_lock) == [(None,)]
    with Worker(settings) as worker:
        worker.run_once()

    assert ran == [job_id]
    assert query(db_dsn, "select id from graphile_worker._private_jobs") == []


# -- (b) SIGTERM during a busy run --------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_sigterm_mid_run_loses_no_job_and_runs_none_twice(
    db_dsn: str, flavour: str, tmp_path: Path
) -> None:
    query(db_dsn, "create table results (n int primary key, job_id bigint not null)")
    query(
        db_dsn,
        "select graphile_worker.add_job('record', json_build_object('n', n))"
        " from generate_series(0, %s - 1) as n",
        [BUSY_JOBS],
    )
    ids_by_n = dict(
        query(
            db_dsn,
            "select (payload->>'n')::int, id from graphile_worker._private_jobs",
        )
    )
    assert sorted(ids_by_n) == list(range(BUSY_JOBS))

    stopping = WorkerProcess(tmp_path / "worker.log", flavour, "record", db_dsn, 10)
    try:
        counted = "select count(*) >= %s from results"
        busy = wait_for(lambda: query(db_dsn, counted, [SIGNAL_AFTER])[0][0])
        assert busy, stopping.output()
        status = stopping.signal(signal.SIGTERM)
    finally:
        output = stopping.output()

    assert status == 0, output  # a graceful stop, then a normal exit
    results = dict(query(db_dsn, "select n, job_id from results"))
    left = {
        n: (job_id, attempts, locked_by, last_error)
        for n, job_id, attempts, locked_by, last_error in query(
            db_dsn,
            "select (payload->>'n')::int, id, attempts, locked_by, last_error"
            " from graphile_worker._private_jobs",
        )
    }
    assert SIGNAL_AFTER <= len(results) < BUSY_JOBS  # stopped mid-run
    assert set(results).isdisjoint(left)  # done means gone: none half done
    assert set(results) | set(left) == set(range(BUSY_JOBS))  # none lost
    assert all(results[n] == ids_by_n[n] for n in results)
    # What is left was never started, or was handed back: free, attempt refunded.
    assert {
        (attempts, locked_by, error) for _, attempts, locked_by, error in left.values()
    } == {(0, None, None)}
    assert query(
        db_dsn,
        "select count(*) from graphile_worker._private_job_queues"
        " where locked_by is not null",
    ) == [(0,)]

    class Record(msgspec.Struct):
        IDENTIFIER: ClassVar[str] = "record"

        n: int

        def run(self, ctx: WorkerContext) -> None:
            ctx.database.execute(
                "insert into results (n, job_id) values (%s, %s)",
                [self.n, ctx.job.id],
            )

    settings = WorkerOptions(
        dsn=db_dsn, tasks=[Record], concurrency=10, handle_signals=False
    )
    with Worker(settings) as worker:
        worker.run_once()

    finished = query(db_dsn, "select n, job_id from results order by n")
    assert finished == sorted(ids_by_n.items())
    assert query(db_dsn, "select count(*) from graphile_worker._private_jobs") == [(0,)]


# -- (c) connections terminated -----------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_worker_survives_the_loss_of_all_its_connections(
    db_dsn: str, flavour: str
) -> None:
    ran: list[tuple[int, float]] = []
    gate = threading.Event()
    settings = WorkerOptions(
        dsn=db_dsn,
        tasks=[hello_tasks(flavour, ran, gate)],
        poll_interval=30,
        handle_signals=False,
    )
    with Background(flavour, settings) as background:
        add_hello(db_dsn, 1)
        add_hello(db_dsn, -1)  # still running when the connections go
        assert wait_for(lambda: len(ran) == 2), "the first jobs never ran"
        assert wait_for(lambda: jobs_left(db_dsn) == 1)

        (killed,) = query(
            db_dsn,
            "select count(pg_terminate_backend(pid)) from pg_stat_activity"
            " where datname = current_database() and pid <> pg_backend_pid()",
        )
        assert killed[0] >= 2  # at least the pool's and the listener's

        gate.set()  # its completion goes out on a new connection
        assert wait_for(lambda: jobs_left(db_dsn) == 0)
        added = time.monotonic()
        add_hello(db_dsn, 2)
        delay = ran_within(ran, 2, added)
        assert delay < RECOVERY_LIMIT
        assert_listens_again(background, db_dsn, ran)

    assert sorted(n for n, _ in ran) == [-1, 1, 2, 3]
    assert jobs_left(db_dsn) == 0


# -- (d) PostgreSQL restart ---------------------------------------------------


@pytest.fixture(scope="module")
def own_server() -> Iterator[EmbeddedServer]:
    """A private embedded server in a temporary data directory, to restart.

    As root the server runs as user ``pgserver``, so the folder is made
    traversable (not readable) by others.
    """
    folder = Path(tempfile.mkdtemp(prefix="gw-restart-"))
    folder.chmod(0o711)
    server = EmbeddedServer(folder / "pgdata", fast=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_worker_carries_on_after_a_postgresql_restart(
    own_server: EmbeddedServer, flavour: str
) -> None:
    name = f"gw_restart_{flavour}"
    with psycopg.connect(own_server.dsn, autocommit=True) as connection:
        connection.execute(
            sql.SQL("drop database if exists {} with (force)").format(
                sql.Identifier(name)
            )
        )
        connection.execute(sql.SQL("create database {}").format(sql.Identifier(name)))

    dsn = own_server.dsn_for(name)
    ran: list[tuple[int, float]] = []
    gate = threading.Event()
    settings = WorkerOptions(
        dsn=dsn,
        tasks=[hello_tasks(flavour, ran, gate)],
        concurrency=2,
        poll_interval=30,
        handle_signals=False,
    )
    with Background(flavour, settings) as background:
        add_hello(dsn, 1)
        add_hello(dsn, -1)  # still running across the restart
        assert wait_for(lambda: len(ran) == 2), "the first jobs never ran"
        assert wait_for(lambda: jobs_left(dsn) == 1)

        own_server.stop()
        gate.set()  # it ends while the server is down: the write must wait
        time.sleep(0.5)
        own_server.start()
        assert own_server.dsn_for(name) == dsn

        back = time.monotonic()
        add_hello(dsn, 2)
        delay = ran_within(ran, 2, back)
        assert delay < RECOVERY_LIMIT
        assert wait_for(lambda: jobs_left(dsn) == 0)  # the held write went out
        assert_listens_again(background, dsn, ran)

    assert sorted(n for n, _ in ran) == [-1, 1, 2, 3]
    assert jobs_left(dsn) == 0
