"""``AsyncWorker``: claims jobs from PostgreSQL and runs their handlers.

One worker is one lock id (its *pool id*) and these cooperating loops:

- the **fetcher** claims, in one statement, as many runnable jobs as there are
  free slots plus the local queue's size (see ``_ahead``), whenever enough
  slots free, a NOTIFY arrives or the poll interval passes;
- **runners**, ``concurrency`` of them, decode each payload and run its
  handler;
- the **completer** writes outcomes in groups: whatever finished while the
  previous write was in flight goes out in the next one, so an idle worker
  pays no latency and a busy one few round trips;
- the **listener** holds its own connection with ``LISTEN "jobs:insert"``,
  reconnecting after any loss;
- the **sweeper** unlocks jobs and queues locked for over four hours.
"""

from __future__ import annotations

import logging
import queue
import secrets
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, Self, final

import msgspec

from graphile_worker import _jobspec
from graphile_worker._acompat import (
    ACancelScope,
    AEvent,
    AQueue,
    ATaskGroup,
    AWakeup,
    aevent_wait,
    arun_blocking,
    asleep,
    run_blocking,
)
from graphile_worker._ahead import ClaimAhead
from graphile_worker._connect import resolve_dsn
from graphile_worker._housekeeping_async import AsyncHousekeeper
from graphile_worker._outcome import (
    Done,
    Failure,
    backoff,
    batch_error,
    message_of,
    replacement_bytes,
    report,
)
from graphile_worker._sql import queries
from graphile_worker.context_async import AsyncWorkerContext
from graphile_worker.database_async import (
    AsyncDatabase,
    AsyncPsycopgDatabase,
    Row,
    as_database,
)
from graphile_worker.errors import (
    ConfigurationError,
    DatabaseConnectionError,
    DatabaseError,
)
from graphile_worker.events import Fail, JobResult, Skip
from graphile_worker.migrate_async import migrate
from graphile_worker.models import Job
from graphile_worker.options import WorkerOptions
from graphile_worker.scheduler_async import AsyncCronScheduler
from graphile_worker.task import TaskHandler, batch_failures
from graphile_worker.utils_async import AsyncWorkerUtils

ABORT_WAIT = 5.0  # seconds aborted jobs get to stop before being released
RETURN_ATTEMPTS = 10  # tries to give back unstarted jobs over a failing connection
TTL_SLACK = 0.01  # seconds past a claimed-ahead job's TTL before checking it
TASK_REFRESH = 10.0  # seconds between re-registering our task identifiers
BREAKING_MIGRATION_EXIT = 57  # Node's exit code for a breaking schema change
SHUTDOWN_MESSAGE = "Job aborted by worker shutdown"

logger = logging.getLogger(__name__)


@final
class AsyncWorker:
    """Runs the jobs of the tasks in ``options`` until stopped.

    Use it as a context manager around :meth:`run`, or call :meth:`run`
    directly; :meth:`run_once` drains the jobs that are runnable now and
    returns. :meth:`stop` may be called from any thread, before or during a run.

    :param options: the worker's configuration.
    :param database: a database to run on instead of the options' DSN or pool.
    """

    def __init__(
        self, options: WorkerOptions, *, database: AsyncDatabase | None = None
    ) -> None:
        if not options.handlers:
            raise ConfigurationError("a worker needs at least one task to run")

        if True:  # ASYNC
            pass
        else:
            handlers = options.handlers.values()
            asynchronous = [h.identifier for h in handlers if h.is_async]
            if asynchronous:
                raise ConfigurationError(
                    f"the threaded Worker cannot run async tasks {asynchronous}; "
                    "use AsyncWorker or define them with def"
                )

        self.options = options
        self.worker_id = f"pool-{secrets.token_hex(9)}"
        if database is not None:
            self._database = database
            self._owned = False
        elif options.pool is not None:
            self._database = as_database(options.pool)
            self._owned = False
        else:
            self._database = AsyncPsycopgDatabase.from_dsn(
                resolve_dsn(options.dsn),
                max_size=options.max_pool_size,
                prepared_statements=options.prepared_statements,
            )
            self._owned = True

        self._sql = queries(options.schema)
        self._utils = AsyncWorkerUtils(
            database=self._database,
            schema=options.schema,
            use_local_time=options.use_local_time,
        )
        self._events = options.events
        self._handlers_by_id: dict[int, TaskHandler] = {}
        self._task_ids: list[int] = []
        self._opened = False
        self._running = False
        self.breaking_migration: int | None = None

        self._count_lock = threading.Lock()
        self._in_flight = 0
        self._ready: AQueue[Row | None] = AQueue()
        self._done: list[Done] = []
        self._abandoned: set[int] = set()
        self._ahead = ClaimAhead(
            options.local_queue_size,
            concurrency=options.concurrency,
            ttl=options.local_queue_ttl,
        )
        self._claimed_at: dict[int, float] = {}
        self._ahead_paused = False
        self._claim_at = 0  # jobs in flight at or below which claiming pays
        self._fetcher_waiting = False
        self._scopes: dict[int, ACancelScope] = {}
        self._wakeup = AWakeup()
        self._finished = AWakeup()
        self._completions = AWakeup()
        self._stopping = AEvent()
        self._forcing = AEvent()
        self._abort = AEvent()
        self._closing = False
        self._writing = False
        self._writes = 0
        self._loop: Any = None
        self._loop_thread = 0
        self._early_stop: int | None = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        await self.close()

    @property
    def database(self) -> AsyncDatabase:
        """The database the worker claims jobs from."""
        return self._database

    async def open(self) -> None:
        """Connect, migrate (unless told not to) and register the task names.

        :raises DatabaseError: the database cannot be reached.
        :raises MigrationError: the schema cannot be brought up to date.
        """
        if self._opened:
            return

        if self._owned and isinstance(self._database, AsyncPsycopgDatabase):
            await self._database.open()

        if self.options.migrate:
            await migrate(self._database, self.options.schema)

        await self._register_tasks()
        self._opened = True
        logger.info(
            "Worker %s ready for tasks %s (concurrency %d)",
            self.worker_id,
            ", ".join(self.options.handlers),
            self.options.concurrency,
            extra={"action": "worker_start", "worker_id": self.worker_id},
        )
        self._events.emit("pool:create", {"worker_id": self.worker_id})

    async def close(self) -> None:
        """Release the database if the worker made it."""
        if self._owned:
            await self._database.close()

        self._opened = False

    async def _register_tasks(self) -> None:
        identifiers = list(self.options.handlers)
        for _ in range(3):
            rows = await self._database.fetch(
                self._sql.task_ids, {"identifiers": identifiers}
            )
            by_name = {identifier: task_id for task_id, identifier in rows}
            if len(by_name) == len(identifiers):
                self._handlers_by_id = {
                    task_id: self.options.handlers[name]
                    for name, task_id in by_name.items()
                }
                self._task_ids = sorted(self._handlers_by_id)
                return

        raise DatabaseError(
            f"task identifiers {identifiers} kept disappearing while registering them"
        )

    def stop(self, *, force: bool = False) -> None:
        """Stop claiming jobs; let running jobs finish (or abort them if ``force``).

        Safe to call from any thread; a second call with ``force`` hurries a
        graceful stop along.
        """
        if True:  # ASYNC
            loop = self._loop
            if loop is None:
                # Not running yet: run() applies the request when it starts.
                self._early_stop = max(self._early_stop or 0, 2 if force else 1)
            elif threading.get_ident() != self._loop_thread:
                loop.call_soon_threadsafe(self._request_stop, force)
            else:
                self._request_stop(force)
        else:
            self._request_stop(force)

    def _request_stop(self, force: bool) -> None:
        if not self._stopping.is_set():
            self._stopping.set()
            logger.info(
                "Worker %s stopping: no new jobs; running jobs get %.1fs to finish",
                self.worker_id,
                self.options.shutdown_grace,
                extra={"action": "worker_stop", "worker_id": self.worker_id},
            )
            self._emit_all(("gracefulShutdown", "pool:gracefulShutdown"))

        if force and not self._forcing.is_set():
            self._forcing.set()
            self._emit_all(("forcefulShutdown", "pool:forcefulShutdown"))

        self._wakeup.set()
        self._finished.set()

    def _on_signal(self, signum: int, frame: FrameType | None = None) -> None:
        name = signal.Signals(signum).name
        force = self._stopping.is_set()
        logger.warning(
            "Received %s: %s",
            name,
            "stopping now" if force else "stopping gracefully (again to force)",
            extra={"action": "worker_signal", "worker_id": self.worker_id},
        )
        if True:  # ASYNC
            self._request_stop(force)
        else:
            # A signal handler must not take locks the interrupted code may hold.
            threading.Thread(target=self._request_stop, args=(force,)).start()

    def _emit_all(self, names: tuple[str, ...]) -> None:
        for name in names:
            self._events.emit(name, {"worker_id": self.worker_id})

    def _on_breaking_migration(self, number: int) -> None:
        self.breaking_migration = number
        self._request_stop(False)

    def _install_signals(self) -> Callable[[], None]:
        if (
            not self.options.handle_signals
            or threading.current_thread() is not threading.main_thread()
        ):
            return lambda: None

        signals = (signal.SIGINT, signal.SIGTERM)
        if True:  # ASYNC
            for signum in signals:
                self._loop.add_signal_handler(signum, self._on_signal, signum)

            def restore() -> None:
                for signum in signals:
                    self._loop.remove_signal_handler(signum)

        else:
            previous = {
                signum: signal.signal(signum, self._on_signal) for signum in signals
            }

            def restore() -> None:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)

        return restore

    async def run(self) -> None:
        """Run jobs until :meth:`stop` or a signal; then shut down gracefully."""
        await self._serve(once=False)

    async def run_once(self) -> None:
        """Run every job that is runnable now, then return."""
        await self._serve(once=True)

    async def _serve(self, *, once: bool) -> None:
        if self._running:
            raise ConfigurationError("this worker is already running")

        if True:  # ASYNC
            import asyncio

            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
            if self._early_stop is not None:
                self._request_stop(self._early_stop > 1)
        else:
            pass

        await self.open()
        self._running = True
        self._events.emit("worker:create", {"worker_id": self.worker_id})
        restore_signals = self._install_signals() if not once else (lambda: None)
        try:
            async with ATaskGroup() as services:
                services.start_soon(self._completer, name=f"{self.worker_id}-complete")
                if not once:
                    keeper = AsyncHousekeeper(
                        self._database,
                        self.options.schema,
                        worker_id=self.worker_id,
                        events=self._events,
                        stopping=self._stopping,
                        on_insert=self._wakeup.set,
                        on_breaking=self._on_breaking_migration,
                    )
                    services.start_soon(keeper.listen, name=f"{self.worker_id}-listen")
                    services.start_soon(keeper.sweep, name=f"{self.worker_id}-sweep")
                    if self.options.crontab:
                        scheduler = AsyncCronScheduler(
                            self._database,
                            self.options.schema,
                            self.options.crontab,
                            events=self._events,
                            worker_id=self.worker_id,
                            stopping=self._stopping,
                            clock=self.options.clock,
                        )
                        services.start_soon(
                            scheduler.run, name=f"{self.worker_id}-cron"
                        )

                try:
                    async with ATaskGroup() as runners:
                        for index in range(self.options.concurrency):
                            runners.start_soon(
                                self._runner, name=f"{self.worker_id}-run-{index}"
                            )

                        try:
                            await self._fetch(once=once)
                            if await self._drain():
                                runners.abandon()
                        finally:
                            self._stopping.set()
                            for _ in range(self.options.concurrency):
                                self._ready.put_nowait(None)

                finally:
                    self._closing = True
                    self._completions.set()

        finally:
            restore_signals()
            self._reset()
            self._emit_all(("worker:stop", "pool:release", "stop"))
            logger.info(
                "Worker %s stopped",
                self.worker_id,
                extra={"action": "worker_stopped", "worker_id": self.worker_id},
            )

    def _reset(self) -> None:
        """Make the worker ready for another run."""
        self._ready.close()
        self._ready = AQueue()
        self._stopping = AEvent()
        self._forcing = AEvent()
        self._abort = AEvent()
        self._closing = False
        self._claimed_at.clear()
        self._early_stop = None
        self._loop = None
        self._running = False

    # -- fetching ---------------------------------------------------------------

    async def _claim(self, limit: int) -> list[Row]:
        return await self._database.fetch(
            self._sql.claim_jobs,
            {
                "pool_id": self.worker_id,
                "task_ids": self._task_ids,
                "forbidden_flags": self.options.current_forbidden_flags(),
                "limit": limit,
            },
        )

    async def _fetch(self, *, once: bool) -> None:
        failures = 0
        refreshed = time.monotonic()
        while not self._stopping.is_set():
            if self._ahead.enabled:
                await self._give_back_expired()

            # After giving jobs back for waiting too long, claim ahead again
            # only once a runner has come free; else they would bounce.
            ahead = 0 if self._ahead_paused else self._ahead.size()
            capacity = self.options.concurrency + ahead
            refill = max(1, ahead // 2)
            self._claim_at = capacity - refill
            free = capacity - self._in_flight
            # With a local queue, top it up in batches rather than job by job,
            # unless runners are idle.
            if free <= 0 or (free < refill and self._ready.qsize() > 0):
                await self._wait_for_work()
                continue

            writes = self._writes
            try:
                rows = await self._claim(free)
            except Exception as exc:
                failures += 1
                delay = backoff(failures)
                logger.warning(
                    "Worker %s could not claim jobs (%s); retrying in %.2fs",
                    self.worker_id,
                    exc,
                    delay,
                    exc_info=not isinstance(exc, DatabaseError),
                    extra={"action": "claim_error", "worker_id": self.worker_id},
                )
                self._events.emit(
                    "worker:getJob:error", {"worker_id": self.worker_id, "error": exc}
                )
                await aevent_wait(self._stopping, delay)
                continue

            failures = 0
            if rows:
                with self._count_lock:
                    self._in_flight += len(rows)
                    if self._abandoned:
                        # Jobs left behind by an earlier run, ours again now.
                        self._abandoned.difference_update(row[0] for row in rows)

                if self._ahead.enabled:
                    claimed_at = time.monotonic()
                    self._claimed_at.update((row[0], claimed_at) for row in rows)

                for row in rows:
                    self._ready.put_nowait(row)

            if len(rows) >= free:
                continue

            if once:
                # A write that landed during the claim may have freed a queue.
                if not rows and self._idle() and writes == self._writes:
                    return

                await self._wait_for_work()
                continue

            if time.monotonic() - refreshed > TASK_REFRESH:
                refreshed = time.monotonic()
                try:
                    await self._register_tasks()
                except DatabaseError:
                    logger.debug("Could not refresh task ids", exc_info=True)

            if not rows:
                self._events.emit("worker:getJob:empty", {"worker_id": self.worker_id})

            await self._wait_for_work()

    async def _wait_for_work(self) -> None:
        timeout = self.options.poll_interval
        oldest = self._oldest_claim()
        if oldest is not None:
            # Wake when the longest-waiting job claimed ahead is due back.
            due = oldest + self._ahead.ttl - time.monotonic()
            timeout = min(timeout, max(due, 0.0) + TTL_SLACK)

        self._fetcher_waiting = True
        try:
            await self._wakeup.wait(timeout)
        finally:
            self._fetcher_waiting = False

    def _idle(self) -> bool:
        return self._in_flight == 0 and not self._done and not self._writing

    # -- running ----------------------------------------------------------------

    async def _runner(self) -> None:
        while True:
            row = await self._ready.get()
            if row is None:
                return

            if self._stopping.is_set():
                await self._return_unstarted([row])
                continue

            if self._claimed_at:
                # Started: no longer the fetcher's to give back. One that
                # waited past the TTL runs all the same, now that a runner
                # is free for it.
                self._claimed_at.pop(row[0], None)

            self._ahead_paused = False

            started = time.monotonic()
            scope = ACancelScope()
            self._scopes[row[0]] = scope
            with scope:
                await self._execute(row, started)

            self._scopes.pop(row[0], None)
            if scope.cancelled_caught:
                self._record(row, error=RuntimeError(SHUTDOWN_MESSAGE), started=started)

            # With jobs claimed ahead, a runner finds the next one ready without
            # suspending (or keeps the GIL), so it could run the whole local
            # queue before the fetcher sees that claiming pays; let the fetcher
            # send its claim first.
            if (
                self._fetcher_waiting
                and self._wakeup.is_set()
                and self._ready.qsize() > self.options.concurrency
            ):
                await asleep(0)

    async def _give_back_expired(self) -> None:
        """Return jobs claimed ahead that have waited past the local queue TTL.

        While every runner is busy with long jobs, this is what keeps
        claimed-ahead jobs from staying locked to this worker; the fetcher
        wakes for it when the oldest one is due.
        """
        oldest = self._oldest_claim()
        if oldest is None or time.monotonic() - oldest <= self._ahead.ttl:
            return

        now = time.monotonic()
        keep: list[Row | None] = []
        expired: list[Row] = []
        while True:
            try:
                row = self._ready.get_nowait()
            except queue.Empty:
                break

            claimed_at = None if row is None else self._claimed_at.get(row[0])
            if row is not None and claimed_at is not None and (
                now - claimed_at > self._ahead.ttl
            ):
                expired.append(row)
            else:
                keep.append(row)

        for row in keep:
            self._ready.put_nowait(row)

        if expired:
            self._ahead_paused = True
            await self._return_unstarted(expired)

    def _oldest_claim(self) -> float | None:
        """When the longest-waiting job claimed ahead was claimed, if any."""
        try:
            return next(iter(self._claimed_at.values()), None)
        except RuntimeError:
            # A runner thread took a job while we looked: ask again later.
            return None

    def _context(self, row: Row, handler: TaskHandler, payload: Any) -> Any:
        def decode_job() -> Job:
            return _jobspec.job_from_row(row, {row[3]: handler.identifier})

        return AsyncWorkerContext(
            payload=payload,
            decode_job=decode_job,
            utils=self._utils,
            worker_id=self.worker_id,
            extensions=self.options.extensions,
            abort_signal=self._abort,
            before_schedule=self.options.before_schedule_hook,
        )

    async def _call(self, hook: Callable[..., Any], *args: Any) -> Any:
        result = hook(*args)
        if True:  # ASYNC
            import inspect

            if inspect.isawaitable(result):
                result = await result
        else:
            pass

        return result

    async def _execute(self, row: Row, started: float) -> None:
        handler = self._handlers_by_id[row[3]]
        error: BaseException | None = None
        replacement: bytes | None = None
        ctx: Any = None
        try:
            payload = handler.decode(row[5])
            ctx = self._context(row, handler, payload)
            if self._events.wants("job:start"):
                self._events.emit(
                    "job:start", {"worker_id": self.worker_id, "job": ctx.job}
                )

            verdict = None
            for hook in self.options.before_run_hooks:
                verdict = await self._call(hook, ctx)
                if isinstance(verdict, Skip | Fail):
                    break

            if isinstance(verdict, Fail):
                error = RuntimeError(verdict.message)
            elif not isinstance(verdict, Skip):
                if True:  # ASYNC
                    if handler.is_async:
                        outcome = await handler.call(payload, ctx)
                    else:
                        outcome = await arun_blocking(handler.call, payload, ctx)
                else:
                    outcome = run_blocking(handler.call, payload, ctx)

                if handler.batch:
                    failed, errors = batch_failures(payload, outcome)
                    if failed:
                        replacement = msgspec.json.encode(failed)
                        error = batch_error(len(failed), len(payload), errors)

        except Exception as exc:
            error = exc
        except BaseException as exc:
            # SystemExit, KeyboardInterrupt or a stray CancelledError from a
            # handler fail its job; only a cancellation of this runner (a
            # forced stop) goes on up.
            if True:  # ASYNC
                import asyncio

                task = asyncio.current_task()
                if isinstance(exc, asyncio.CancelledError) and (
                    task is not None and task.cancelling() > 0
                ):
                    raise
            else:
                pass

            error = exc

        if ctx is not None and self.options.after_run_hooks:
            result = JobResult(error=error, replacement_payload=replacement)
            for after in self.options.after_run_hooks:
                try:
                    changed = await self._call(after, ctx, result)
                except Exception as exc:
                    changed = JobResult(error=exc)

                if isinstance(changed, JobResult):
                    result = changed

            error = result.error
            replacement = replacement_bytes(result.replacement_payload, replacement)

        self._record(row, error=error, started=started, replacement=replacement)

    def _record(
        self,
        row: Row,
        *,
        error: BaseException | None,
        started: float,
        replacement: bytes | None = None,
    ) -> None:
        handler = self._handlers_by_id[row[3]]
        self._ahead.observe(time.monotonic() - started)
        claim = False
        with self._count_lock:
            # A job in a named queue holds its slot until its outcome is written:
            # only then is the queue unlocked, and claiming earlier could take a
            # later job ahead of the queue's next one.
            if row[1] is None or row[0] in self._abandoned:
                self._in_flight -= 1
                # Enough slots just came free for a claim to pay.
                claim = self._in_flight == self._claim_at

            if row[0] in self._abandoned:
                return

            self._done.append(Done(row, handler, error, replacement, started))

        self._completions.set()
        self._finished.set()
        # Wake the fetcher only when it would claim: enough slots came free or
        # the runners have nothing left to take.
        if claim or not self._ready.qsize():
            self._wakeup.set()

    async def _return_unstarted(self, rows: list[Row]) -> None:
        ids = [row[0] for row in rows]
        for job_id in ids:
            self._claimed_at.pop(job_id, None)

        with self._count_lock:
            self._in_flight -= len(rows)

        attempt = 0
        while True:
            try:
                await self._database.execute(
                    self._sql.return_claimed, {"ids": ids, "pool_id": self.worker_id}
                )
                break
            except DatabaseError as exc:
                # A pool may hand out several connections the server dropped
                # before a live one: retry those failures a while.
                attempt += 1
                transient = isinstance(exc, DatabaseConnectionError)
                if transient and attempt < RETURN_ATTEMPTS and not (
                    self._forcing.is_set() and attempt > 3
                ):
                    await aevent_wait(self._forcing, backoff(attempt))
                    continue

                logger.warning(
                    "Worker %s could not return unstarted jobs %s (%s); they "
                    "unlock after four hours or with force_unlock_workers(['%s'])",
                    self.worker_id,
                    ids[:20],
                    exc,
                    self.worker_id,
                    extra={"action": "return_error", "worker_id": self.worker_id},
                )
                break

        self._finished.set()

    # -- completing -------------------------------------------------------------

    async def _completer(self) -> None:
        while True:
            await self._completions.wait()
            if self.options.complete_delay and not self._closing:
                await aevent_wait(self._stopping, self.options.complete_delay)

            with self._count_lock:
                batch, self._done = self._done, []
                self._writing = bool(batch)

            if batch:
                try:
                    await self._write(batch)
                finally:
                    queued = sum(1 for done in batch if done.row[1] is not None)
                    with self._count_lock:
                        self._in_flight -= queued
                        self._writing = False
                        self._writes += 1

                self._wakeup.set()
                self._finished.set()

            if self._closing and not self._done:
                return

    async def _write(self, batch: list[Done]) -> None:
        try:
            failed_rows = await self._store(batch)
        except DatabaseError as exc:
            # The server refused the statement itself, not the connection:
            # sending it again cannot help, so find the jobs it chokes on.
            logger.warning(
                "Worker %s: the database refused to record %d finished jobs (%s); "
                "recording them one by one",
                self.worker_id,
                len(batch),
                exc,
                extra={"action": "complete_refused", "worker_id": self.worker_id},
            )
            for done in batch:
                await self._write_one(done)

            return

        if failed_rows is not None:
            report(batch, failed_rows, events=self._events, worker_id=self.worker_id)

    async def _write_one(self, done: Done) -> None:
        try:
            failed_rows = await self._store([done])
        except DatabaseError as exc:
            if done.error is None:
                self._give_up([done], exc)
                return

            # Store a message the database cannot refuse in place of the
            # error it did, so that the job is retried rather than stuck.
            reason = str(exc).partition("\n")[0]
            substitute = Done(
                done.row,
                done.handler,
                RuntimeError(f"the database refused this job's error ({reason})"),
                None,
                done.started,
            )
            try:
                failed_rows = await self._store([substitute])
            except DatabaseError as again:
                self._give_up([done], again)
                return

            done = substitute

        if failed_rows is not None:
            report([done], failed_rows, events=self._events, worker_id=self.worker_id)

    async def _store(self, batch: list[Done]) -> list[Row] | None:
        """Write a batch of outcomes, retrying while the connection fails.

        :returns: the failed jobs' new attempts and run times, or ``None`` when
            a forced stop gave up on a connection that kept failing.
        :raises DatabaseError: the database refused a statement.
        """
        successes = [done.row[0] for done in batch if done.error is None]
        failures = [done for done in batch if done.error is not None]
        document = msgspec.json.encode(
            [
                Failure(
                    done.row[0],
                    message_of(done.error, with_traceback=self.options.error_traceback),
                    msgspec.Raw(done.replacement) if done.replacement else None,
                )
                for done in failures
                if done.error is not None
            ]
        )
        attempt = 0
        failed_rows: list[Row] = []
        while True:
            try:
                if successes:
                    await self._database.execute(
                        self._sql.complete_claimed,
                        {"ids": successes, "pool_id": self.worker_id},
                    )
                    successes = []

                if failures:
                    failed_rows = await self._database.fetch(
                        self._sql.fail_claimed,
                        {"failures": document.decode(), "pool_id": self.worker_id},
                    )

                return failed_rows
            except DatabaseConnectionError as exc:
                attempt += 1
                if self._forcing.is_set() and attempt > 3:
                    self._give_up(batch, exc)
                    return None

                delay = backoff(attempt)
                logger.warning(
                    "Worker %s could not record finished jobs (%s); retrying in %.2fs",
                    self.worker_id,
                    exc,
                    delay,
                    extra={"action": "complete_retry", "worker_id": self.worker_id},
                )
                await aevent_wait(self._forcing, delay)

    def _give_up(self, batch: list[Done], exc: DatabaseError) -> None:
        ids = [done.row[0] for done in batch]
        logger.error(
            "Worker %s gave up recording %d finished jobs %s%s (%s); they stay "
            "locked until force_unlock_workers(['%s']) or four hours pass",
            self.worker_id,
            len(ids),
            ids[:20],
            " and more" if len(ids) > 20 else "",
            exc,
            self.worker_id,
            extra={"action": "complete_error", "worker_id": self.worker_id},
        )

    # -- shutting down ----------------------------------------------------------

    async def _drain(self) -> bool:
        """Return unstarted jobs, wait out the grace period, then abort.

        :returns: whether some handlers ignored the abort and were left behind.
        """
        unstarted: list[Row] = []
        while True:
            try:
                row = self._ready.get_nowait()
            except queue.Empty:
                break

            if row is not None:
                unstarted.append(row)

        if unstarted:
            await self._return_unstarted(unstarted)

        deadline = time.monotonic() + self.options.shutdown_grace
        while self._in_flight > 0 and not self._forcing.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break

            await self._finished.wait(remaining)

        if self._in_flight == 0:
            return False

        logger.warning(
            "Worker %s aborting %d running jobs",
            self.worker_id,
            self._in_flight,
            extra={"action": "worker_abort", "worker_id": self.worker_id},
        )
        if not self._forcing.is_set():
            self._emit_all(("forcefulShutdown", "pool:forcefulShutdown"))

        self._abort.set()
        for scope in list(self._scopes.values()):
            scope.cancel()

        deadline = time.monotonic() + ABORT_WAIT
        while self._in_flight > 0 and time.monotonic() < deadline:
            await self._finished.wait(deadline - time.monotonic())

        return await self._release_stuck()

    async def _release_stuck(self) -> bool:
        """Fail the jobs whose handlers ignored the abort, so they run again."""
        with self._count_lock:
            stuck = [job_id for job_id in self._scopes if job_id not in self._abandoned]
            self._abandoned.update(stuck)

        if not stuck:
            return False

        document = msgspec.json.encode(
            [Failure(job_id, SHUTDOWN_MESSAGE) for job_id in stuck]
        )
        try:
            await self._database.fetch(
                self._sql.fail_claimed,
                {"failures": document.decode(), "pool_id": self.worker_id},
            )
        except DatabaseError as exc:
            logger.error(
                "Worker %s could not release jobs %s (%s); use "
                "force_unlock_workers(['%s'])",
                self.worker_id,
                stuck,
                exc,
                self.worker_id,
                extra={"action": "release_error", "worker_id": self.worker_id},
            )

        return True
