"""``WorkerOptions``: everything a worker is configured with, for both flavours."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Self, TypeVar, final

from graphile_worker._ahead import LocalQueueSize
from graphile_worker._sql import DEFAULT_SCHEMA
from graphile_worker.context_async import ScheduleInterceptor
from graphile_worker.cron import CronItem, parse_crontab
from graphile_worker.errors import ConfigurationError
from graphile_worker.events import Events, JobResult
from graphile_worker.extensions import Extensions
from graphile_worker.task import TaskHandler, handler_of

CONCURRENCY = 10  # jobs one worker runs at once
POLL_INTERVAL = 2.0  # seconds between polls when LISTEN is quiet
SHUTDOWN_GRACE = 5.0  # seconds running jobs get to finish before the abort
MAX_CONCURRENCY = 10_000
LOCAL_QUEUE_TTL = 300.0  # seconds a job claimed ahead may wait for a runner

# before_job_run(ctx) may return Skip() or Fail(message); after_job_run(ctx,
# result) may return a replacement JobResult. Both may be async for AsyncWorker.
BeforeRun = Callable[[Any], object]
AfterRun = Callable[[Any, JobResult], object]
FlagSource = Sequence[str] | Callable[[], Iterable[str] | None]


H = TypeVar("H", bound=Callable[..., Any])


@final
class WorkerOptions:
    """Configuration shared by :class:`AsyncWorker` and the threaded :class:`Worker`.

    :param dsn: a libpq connection string; without any source, ``$DATABASE_URL``
        and then libpq's ``PG*`` variables.
    :param pool: a caller's psycopg pool (async for AsyncWorker, blocking for
        Worker); it must leave room for the worker's ``concurrency``.
    :param schema: the graphile_worker schema name.
    :param concurrency: how many jobs run at once.
    :param poll_interval: seconds between polls for jobs when no NOTIFY arrives;
        also how soon jobs scheduled for later are noticed.
    :param max_pool_size: connections in the pool made from ``dsn``.
    :param prepared_statements: turn off behind PgBouncer in transaction mode.
    :param tasks: task definitions (see :meth:`define_job`).
    :param forbidden_flags: jobs carrying any of these flags are left for other
        workers; a callable is asked before each claim.
    :param shutdown_grace: seconds that running jobs get to finish on a graceful
        stop before their abort signal fires.
    :param use_local_time: use this machine's clock for ``run_at`` defaults.
    :param migrate: install or upgrade the schema when the worker starts.
    :param complete_delay: seconds to hold a finished job's write so more can
        join it; 0 writes at once, batching only what piles up meanwhile.
    :param local_queue_size: jobs to claim ahead of free runners, so claiming
        overlaps running: a fixed number (0: claim only for free runners, as
        graphile-worker does by default) or ``"auto"``, which keeps about 20 ms
        of work claimed ahead (at most 500 jobs), judged by recent run times:
        short jobs are claimed in batches, long ones only for free runners.
        Claimed jobs are locked to this worker; they go back to the queue on a
        stop, or when they wait longer than ``local_queue_ttl``.
    :param local_queue_ttl: seconds a job claimed ahead may wait for a runner
        (with ``"auto"``, at most one second).
    :param error_traceback: store the traceback in ``last_error``, not just the
        message.
    :param handle_signals: on the main thread, stop gracefully on SIGINT/SIGTERM
        and at once on a second signal.
    :param crontab: recurring jobs, as crontab text (parsed here, so a bad line
        fails at once, naming the line) or as parsed items.
    :param clock: where the cron scheduler reads the time; for tests.
    """

    def __init__(
        self,
        *,
        dsn: str | None = None,
        pool: Any = None,
        schema: str = DEFAULT_SCHEMA,
        concurrency: int = CONCURRENCY,
        poll_interval: float = POLL_INTERVAL,
        max_pool_size: int | None = None,
        prepared_statements: bool = True,
        tasks: Iterable[object] = (),
        forbidden_flags: FlagSource | None = None,
        shutdown_grace: float = SHUTDOWN_GRACE,
        use_local_time: bool = False,
        migrate: bool = True,
        complete_delay: float = 0.0,
        local_queue_size: LocalQueueSize = "auto",
        local_queue_ttl: float = LOCAL_QUEUE_TTL,
        error_traceback: bool = False,
        handle_signals: bool = True,
        crontab: str | Sequence[CronItem] | None = None,
        clock: Any = None,
    ) -> None:
        if dsn is not None and pool is not None:
            raise ConfigurationError("give a dsn or a pool, not both")

        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise ConfigurationError(
                f"concurrency must be 1 to {MAX_CONCURRENCY}, not {concurrency}"
            )

        for name, value in (
            ("poll_interval", poll_interval),
            ("shutdown_grace", shutdown_grace),
            ("complete_delay", complete_delay),
        ):
            if not value >= 0:
                raise ConfigurationError(f"{name} must be 0 or more, not {value}")

        if local_queue_size != "auto" and (
            isinstance(local_queue_size, bool)
            or not isinstance(local_queue_size, int)
            or not 0 <= local_queue_size <= MAX_CONCURRENCY
        ):
            raise ConfigurationError(
                f"local_queue_size must be 'auto' or 0 to {MAX_CONCURRENCY}, "
                f"not {local_queue_size!r}"
            )

        if not local_queue_ttl > 0:
            raise ConfigurationError(
                f"local_queue_ttl must be more than 0, not {local_queue_ttl}"
            )

        if poll_interval == 0:
            raise ConfigurationError("poll_interval must be more than 0")

        if isinstance(forbidden_flags, str):
            raise ConfigurationError("forbidden_flags must be a list of strings")

        self.dsn = dsn
        self.pool = pool
        self.schema = schema
        self.concurrency = concurrency
        self.poll_interval = float(poll_interval)
        self.max_pool_size = max_pool_size or concurrency + 2
        self.prepared_statements = prepared_statements
        self.forbidden_flags = forbidden_flags
        self.shutdown_grace = float(shutdown_grace)
        self.use_local_time = use_local_time
        self.migrate = migrate
        self.complete_delay = float(complete_delay)
        self.local_queue_size = local_queue_size
        self.local_queue_ttl = float(local_queue_ttl)
        self.error_traceback = error_traceback
        self.handle_signals = handle_signals
        self.crontab = _cron_items(crontab)
        self.clock = clock
        self.events = Events()
        self.extensions = Extensions()
        self.handlers: dict[str, TaskHandler] = {}
        self.before_run_hooks: list[BeforeRun] = []
        self.after_run_hooks: list[AfterRun] = []
        self.before_schedule_hook: ScheduleInterceptor | None = None
        for definition in tasks:
            self.define_job(definition)

    def define_job(self, definition: object) -> Self:
        """Register a task: a Struct with ``IDENTIFIER`` and ``run``, or ``@task``.

        :raises ConfigurationError: not a task, or its identifier is taken.
        """
        handler = handler_of(definition)
        if handler.identifier in self.handlers:
            raise ConfigurationError(
                f"task {handler.identifier!r} is defined twice: "
                f"{self.handlers[handler.identifier]!r} and {handler!r}"
            )

        self.handlers[handler.identifier] = handler
        return self

    def add_extension(self, value: object) -> Self:
        """Store application state for ``ctx.get_ext(type(value))``."""
        self.extensions = self.extensions.with_value(value)
        return self

    def before_job_run(self, hook: H) -> H:
        """Register ``hook(ctx)``, which may return ``Skip()`` or ``Fail(msg)``."""
        self.before_run_hooks.append(hook)
        return hook

    def after_job_run(self, hook: H) -> H:
        """Register ``hook(ctx, result)``, which may return a new JobResult."""
        self.after_run_hooks.append(hook)
        return hook

    def before_job_schedule(self, hook: ScheduleInterceptor) -> ScheduleInterceptor:
        """Set ``hook(raw_job)`` to rewrite or drop (``Skip()``) jobs added via ctx."""
        self.before_schedule_hook = hook
        return hook

    def current_forbidden_flags(self) -> list[str] | None:
        """The flags to refuse for the next claim, or ``None`` for none."""
        source = self.forbidden_flags
        flags = source() if callable(source) else source
        if not flags:
            return None

        listed = list(flags)
        if not all(isinstance(flag, str) for flag in listed):
            raise ConfigurationError("forbidden_flags must give strings")

        return listed


def _cron_items(crontab: str | Sequence[CronItem] | None) -> list[CronItem]:
    if crontab is None:
        return []

    items = parse_crontab(crontab) if isinstance(crontab, str) else list(crontab)
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, CronItem):
            raise ConfigurationError(f"crontab items must be CronItem, not {item!r}")

        if item.identifier in seen:
            raise ConfigurationError(
                f"crontab identifier {item.identifier!r} is used twice; give one "
                "of them another id"
            )

        seen.add(item.identifier)

    return items
