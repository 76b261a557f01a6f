"""``graphile-worker demo``: graphile_worker at work on a real database, in seconds.

Without ``-c`` (or ``$DATABASE_URL``) the demo starts the embedded PostgreSQL
(``pip install 'graphile_worker[embedded]'``); with it, it uses that server. In
either case it drops and recreates its own database (``graphile_worker_demo``
unless ``--database`` names another), touching nothing else, and leaves it
behind to look at. There it migrates the schema and adds jobs of five tasks:

- ``send_welcome_email``: a Struct task, 200 jobs from one ``add_jobs`` call,
  plus one to a bouncing address with ``max_attempts=1`` that fails for good;
- ``greet_user``: an ``@task`` function fed by an ``AFTER INSERT`` trigger that
  calls ``graphile_worker.add_job`` for each row inserted into ``demo_users``;
- ``bank_transfer``: jobs in the named queue ``account-42``, which must run
  one at a time; each reads the balance, waits, then writes it back, so any
  overlap would lose money as well as show in the overlap count;
- ``flaky_report``: fails on its first attempt; the demo reschedules it to run
  at once (``reschedule_jobs``) rather than wait the e^1 s back-off;
- ``index_documents``: a batch task filled by several ``add_batch_job`` calls
  sharing a job key; one document fails once, and only it is retried.

A worker (``AsyncWorker``, or ``Worker`` with ``--threaded``) runs them while a
progress line shows counts per task; when no job is left to run the worker is
stopped and a summary is printed, with checks that everything added up. The
exit code is 0 when it did, 1 when it did not or something failed, 2 for a
usage error and 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import random
import re
import shutil
import statistics
import sys
import textwrap
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, TextIO

import msgspec
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from graphile_worker._connect import resolve_dsn
from graphile_worker._sql import DEFAULT_SCHEMA
from graphile_worker.cli import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    ConnectError,
    check_connection,
    concurrency,
    configure_logging,
    report_error,
)
from graphile_worker.context import WorkerContext
from graphile_worker.context_async import AsyncWorkerContext
from graphile_worker.errors import ConfigurationError, GraphileWorkerError
from graphile_worker.models import JobSpec
from graphile_worker.options import CONCURRENCY, WorkerOptions
from graphile_worker.task import task
from graphile_worker.utils import WorkerUtils
from graphile_worker.worker import Worker
from graphile_worker.worker_async import AsyncWorker

PROG: Final = "graphile-worker demo"
DEMO_DATABASE: Final = "graphile_worker_demo"
MAINTENANCE_DB: Final = "postgres"
FORCE_DROP_VERSION: Final = 130000  # server_version_num with DROP ... WITH (FORCE)

EMAILS: Final = 200
PROJECTS_PER_PLAN: Final = {"free": 1, "team": 10, "enterprise": 100}
BOUNCING_ADDRESS: Final = "nobody@bounce.example.invalid"
USER_NAMES: Final = (
    "Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken",
    "Margaret", "Dennis", "Radia", "Tim", "Katherine", "John", "Shafi", "Leslie",
    "Hedy", "Niklaus", "Sophie", "Guido",
)  # fmt: skip
ACCOUNT_ID: Final = 42
ACCOUNT_QUEUE: Final = f"account-{ACCOUNT_ID}"
TRANSFERS: Final = 25
REPORTS: Final = ("daily", "weekly", "monthly")
REPORT_SAMPLES: Final = 2000
BATCH_KEY: Final = "index-documents"
BATCH_CALLS: Final = 4  # add_batch_job calls that merge into one job
DOCUMENTS_PER_CALL: Final = 10
FAILING_DOCUMENT: Final = 17  # fails on the batch's first attempt only
DOCUMENT_WORDS: Final = ("queue", "worker", "job", "retry", "batch", "postgres",
    "listen", "notify", "schema", "lock", "trigger", "payload", "backoff", "cron",
    "python", "async", "thread", "pool", "index")  # fmt: skip

EMAIL_DELAY: Final = (0.002, 0.012)  # seconds, bounds of a simulated SMTP call
TRANSFER_DELAY: Final = 0.01  # seconds between reading and writing the balance
TASK_POOL_SIZE: Final = 4  # connections the tasks share for their own queries
POLL_INTERVAL: Final = 0.25  # seconds; short, so rescheduled retries start at once
SHUTDOWN_GRACE: Final = 2.0  # seconds
MONITOR_INTERVAL: Final = 0.1  # seconds between looks at the jobs table
PLAIN_PROGRESS_EVERY: Final = 1.0  # seconds between lines when not on a terminal
TIMEOUT: Final = 60.0  # seconds the jobs may take before the demo gives up
MAX_WIDTH: Final = 100  # characters, the widest the summary's lines get

TASK_ORDER: Final = (
    "send_welcome_email",
    "greet_user",
    "bank_transfer",
    "flaky_report",
    "index_documents",
)
SHORT_NAMES: Final = {
    "send_welcome_email": "email",
    "greet_user": "greet",
    "bank_transfer": "transfer",
    "flaky_report": "report",
    "index_documents": "index",
}
EXPECTED_LOG_ACTIONS: Final = frozenset({"job_retry", "job_failed"})
WORD: Final = re.compile(r"[a-z]+")

Context = WorkerContext | AsyncWorkerContext

logger = logging.getLogger(__name__)


def _out(text: str = "", *, stream: TextIO | None = None) -> None:
    target = sys.stdout if stream is None else stream
    target.write(text + "\n")
    target.flush()


def _width() -> int:
    return min(shutil.get_terminal_size((MAX_WIDTH, 20)).columns, MAX_WIDTH) - 1


def _say(text: str, *, indent: str = "", hang: str = "  ") -> None:
    """Write a paragraph wrapped to the terminal (at most MAX_WIDTH columns)."""
    _out(
        textwrap.fill(
            text,
            width=_width(),
            initial_indent=indent,
            subsequent_indent=" " * len(indent) + hang,
            break_on_hyphens=False,
        )
    )


# -- what the tasks share -----------------------------------------------------


class DemoState:
    """What the demo's tasks record and the worker's events count.

    Tasks reach it with ``ctx.get_ext(DemoState)``; every method is thread-safe.

    :param pool: connections for the tasks' own queries.
    """

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool
        self.lock = threading.Lock()
        self.started = threading.Event()
        self.started_at = 0.0
        self.finished_at = 0.0
        self.succeeded: Counter[str] = Counter()
        self.retried: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.to_reschedule: list[int] = []
        self.rescheduled = 0
        self.email_sizes: list[int] = []
        self.active_transfers = 0
        self.most_active_transfers = 0
        self.transfers_done: list[int] = []
        self.report_attempts: dict[str, list[int]] = {}
        self.report_means: dict[str, float] = {}
        self.batch_attempts: list[tuple[int, list[int]]] = []
        self.indexed: Counter[int] = Counter()
        self.index: dict[str, set[int]] = {}

    # Worker events.

    def on_start(self, details: Mapping[str, Any]) -> None:
        """``pool:create``: the worker is ready."""
        self.started_at = time.monotonic()
        self.started.set()

    def on_success(self, details: Mapping[str, Any]) -> None:
        """``job:success``."""
        with self.lock:
            self.succeeded[details["job"].task_identifier] += 1

    def on_error(self, details: Mapping[str, Any]) -> None:
        """``job:error``: a failed attempt; queue a retry for rescheduling."""
        job = details["job"]
        with self.lock:
            if job.attempts < job.max_attempts:
                self.retried[job.task_identifier] += 1
                self.to_reschedule.append(job.id)
            else:
                self.failed[job.task_identifier] += 1

    def take_retries(self) -> list[int]:
        """The ids of failed jobs waiting to be rescheduled, now taken."""
        with self.lock:
            taken, self.to_reschedule = self.to_reschedule, []
            self.rescheduled += len(taken)
            return taken

    def retries(self) -> int:
        """Failed attempts that will be retried, so far."""
        with self.lock:
            return sum(self.retried.values())

    def finished(self) -> Counter[str]:
        """Jobs finished per task: succeeded or failed for good."""
        with self.lock:
            return self.succeeded + self.failed

    # Task records.

    @contextmanager
    def transfer(self, transfer_id: int) -> Iterator[None]:
        """Count transfers in progress, to catch two running at once."""
        with self.lock:
            self.active_transfers += 1
            self.most_active_transfers = max(
                self.most_active_transfers, self.active_transfers
            )
        try:
            yield
        finally:
            with self.lock:
                self.active_transfers -= 1
                self.transfers_done.append(transfer_id)


def _state(ctx: Context) -> DemoState:
    state = ctx.get_ext(DemoState)
    if state is None:
        raise RuntimeError("the demo tasks need the DemoState extension")

    return state


# -- the tasks ------------------------------------------------------------------


class SendWelcomeEmail(msgspec.Struct, frozen=True):
    """A Struct task: compose a welcome email and "send" it."""

    IDENTIFIER: ClassVar[str] = "send_welcome_email"
    user_id: int
    email: str
    name: str
    plan: str

    def run(self, ctx: Context) -> None:
        """Compose the message, simulate the SMTP call, record its size."""
        if self.email.endswith(".invalid"):
            raise RuntimeError(f"550 mailbox unavailable: {self.email} (hard bounce)")

        message_id = hashlib.sha256(f"{ctx.job.id}:{self.email}".encode()).hexdigest()
        body = (
            f"Message-ID: <{message_id[:24]}@demo.example>\n"
            f"To: {self.name} <{self.email}>\n"
            f"Subject: Welcome to the {self.plan} plan, {self.name}!\n\n"
            f"Hello {self.name},\n\nyour account #{self.user_id} is ready. "
            f"The {self.plan} plan comes with {PROJECTS_PER_PLAN[self.plan]} "
            "projects.\n\nThe demo team\n"
        )
        time.sleep(random.uniform(*EMAIL_DELAY))
        state = _state(ctx)
        with state.lock:
            state.email_sizes.append(len(body.encode()))


class GreetUser(msgspec.Struct, frozen=True):
    """The payload the ``demo_users`` trigger builds with ``json_build_object``."""

    user_id: int
    name: str


@task("greet_user")
def greet_user(user: GreetUser, ctx: Context) -> None:
    """An ``@task`` function: store a greeting on the user's row."""
    with _state(ctx).pool.connection() as connection:
        connection.execute(
            "update demo_users set greeting = %s where id = %s",
            [f"Welcome aboard, {user.name}!", user.user_id],
        )


class BankTransfer(msgspec.Struct, frozen=True):
    """A job of the named queue ``account-42``: read, wait, write the balance.

    Two transfers at once would both read the same balance and one deposit
    would be lost; the queue is what prevents it.
    """

    IDENTIFIER: ClassVar[str] = "bank_transfer"
    transfer_id: int
    amount_cents: int

    def run(self, ctx: Context) -> None:
        """Add ``amount_cents`` to the account, the racy way."""
        state = _state(ctx)
        with state.transfer(self.transfer_id), state.pool.connection() as connection:
            row = connection.execute(
                "select balance_cents from demo_accounts where id = %s", [ACCOUNT_ID]
            ).fetchone()
            assert row is not None
            time.sleep(TRANSFER_DELAY)
            connection.execute(
                "update demo_accounts set balance_cents = %s where id = %s",
                [row[0] + self.amount_cents, ACCOUNT_ID],
            )


class FlakyReport(msgspec.Struct, frozen=True):
    """A Struct task that fails on its first attempt and succeeds on the next."""

    IDENTIFIER: ClassVar[str] = "flaky_report"
    period: str
    seed: int

    def run(self, ctx: Context) -> None:
        """Fail once; then compute the report's statistics."""
        state = _state(ctx)
        attempt = ctx.job.attempts
        with state.lock:
            state.report_attempts.setdefault(self.period, []).append(attempt)

        if attempt == 1:
            raise RuntimeError(
                f"{self.period} report: warehouse timed out (simulated, first try)"
            )

        rng = random.Random(self.seed)
        samples = [rng.gauss(120.0, 30.0) for _ in range(REPORT_SAMPLES)]
        with state.lock:
            state.report_means[self.period] = statistics.fmean(samples)


class IndexDocument(msgspec.Struct, frozen=True):
    """One item of the ``index_documents`` batch."""

    IDENTIFIER: ClassVar[str] = "index_documents"
    doc_id: int
    text: str


@task("index_documents", batch=True)
def index_documents(
    documents: list[IndexDocument], ctx: Context
) -> list[Exception | None]:
    """A batch task: index each document; one fails on the first attempt only."""
    state = _state(ctx)
    attempt = ctx.job.attempts
    with state.lock:
        state.batch_attempts.append((attempt, [doc.doc_id for doc in documents]))

    outcomes: list[Exception | None] = []
    for doc in documents:
        if doc.doc_id == FAILING_DOCUMENT and attempt == 1:
            outcomes.append(
                RuntimeError(f"document {doc.doc_id} is locked by an editor")
            )
            continue

        words = set(WORD.findall(doc.text.lower()))
        with state.lock:
            state.indexed[doc.doc_id] += 1
            for word in words:
                state.index.setdefault(word, set()).add(doc.doc_id)

        outcomes.append(None)

    return outcomes


TASKS: Final[tuple[object, ...]] = (
    SendWelcomeEmail,
    greet_user,
    BankTransfer,
    FlakyReport,
    index_documents,
)


# -- setting up -----------------------------------------------------------------


SETUP_SQL: Final = """
create table demo_users (
  id int generated always as identity primary key,
  name text not null,
  greeting text,
  created_at timestamptz not null default now()
);

create function demo_users_greet() returns trigger
language plpgsql as $$
begin
  perform {schema}.add_job(
    'greet_user', json_build_object('user_id', new.id, 'name', new.name)
  );
  return new;
end
$$;

create trigger demo_users_greet after insert on demo_users
for each row execute function demo_users_greet();

create table demo_accounts (
  id int primary key,
  balance_cents bigint not null
);
"""


@dataclass
class Plan:
    """The jobs the demo added, to count progress against and check."""

    totals: dict[str, int]
    transfer_sum: int
    documents: list[int]
    batch_items: int
    batch_jobs: int


def _public_dsn(dsn: str) -> str:
    """The DSN without its password, for printing."""
    params = {k: v for k, v in conninfo_to_dict(dsn).items() if k != "password"}
    return make_conninfo("", **params)


def _admin_dsn(dsn: str, database: str) -> str:
    """A DSN to create and drop ``database`` from: ``dsn``, unless it names it."""
    if conninfo_to_dict(dsn).get("dbname") == database:
        return make_conninfo(dsn, dbname=MAINTENANCE_DB)

    return dsn


def recreate_database(admin_dsn: str, database: str) -> str:
    """Drop ``database`` if it exists and create it afresh.

    :returns: the DSN of the new database.
    """
    name = sql.Identifier(database)
    with psycopg.connect(admin_dsn, autocommit=True) as connection:
        if connection.info.server_version >= FORCE_DROP_VERSION:
            connection.execute(
                sql.SQL("drop database if exists {} with (force)").format(name)
            )
        else:
            connection.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity"
                " where datname = %s and pid <> pg_backend_pid()",
                [database],
            )
            connection.execute(sql.SQL("drop database if exists {}").format(name))

        connection.execute(sql.SQL("create database {}").format(name))

    return make_conninfo(admin_dsn, dbname=database)


def _documents() -> list[IndexDocument]:
    rng = random.Random(7)
    words = DOCUMENT_WORDS
    return [
        IndexDocument(doc_id, " ".join(rng.choice(words) for _ in range(12)))
        for doc_id in range(1, BATCH_CALLS * DOCUMENTS_PER_CALL + 1)
    ]


def add_demo_jobs(utils: WorkerUtils, connection: psycopg.Connection[Any]) -> Plan:
    """Create the demo tables and add every job; nothing runs them yet."""
    connection.execute(SETUP_SQL.format(schema=DEFAULT_SCHEMA))
    connection.execute(
        "insert into demo_accounts (id, balance_cents) values (%s, 0)", [ACCOUNT_ID]
    )
    rng = random.Random(42)
    plans = list(PROJECTS_PER_PLAN)
    emails: list[SendWelcomeEmail | tuple[SendWelcomeEmail, JobSpec]] = [
        SendWelcomeEmail(
            user_id=number,
            email=f"user{number}@example.com",
            name=USER_NAMES[number % len(USER_NAMES)],
            plan=rng.choice(plans),
        )
        for number in range(1, EMAILS + 1)
    ]
    emails.append(
        (
            SendWelcomeEmail(EMAILS + 1, BOUNCING_ADDRESS, "Nobody", "free"),
            JobSpec(max_attempts=1),
        )
    )
    added_emails = utils.add_jobs(emails)

    connection.execute(
        "insert into demo_users (name) select unnest(%s::text[])", [list(USER_NAMES)]
    )
    row = connection.execute(
        sql.SQL(
            "select count(*) from {}.jobs where task_identifier = 'greet_user'"
        ).format(sql.Identifier(DEFAULT_SCHEMA))
    ).fetchone()
    greetings = int(row[0]) if row is not None else 0

    amounts = [rng.randrange(500, 50_000) for _ in range(TRANSFERS)]
    added_transfers = utils.add_jobs(
        [BankTransfer(number, amount) for number, amount in enumerate(amounts, 1)],
        JobSpec(queue_name=ACCOUNT_QUEUE),
    )
    added_reports = utils.add_jobs(
        [FlakyReport(period, seed) for seed, period in enumerate(REPORTS)]
    )

    documents = _documents()
    batch_ids: set[int] = set()
    batch_items = 0
    for start in range(0, len(documents), DOCUMENTS_PER_CALL):
        job = utils.add_batch_job(
            documents[start : start + DOCUMENTS_PER_CALL], JobSpec(job_key=BATCH_KEY)
        )
        batch_ids.add(job.id)
        batch_items = len(job.payload)

    return Plan(
        totals={
            "send_welcome_email": len(added_emails),
            "greet_user": greetings,
            "bank_transfer": len(added_transfers),
            "flaky_report": len(added_reports),
            "index_documents": len(batch_ids),
        },
        transfer_sum=sum(amounts),
        documents=[doc.doc_id for doc in documents],
        batch_items=batch_items,
        batch_jobs=len(batch_ids),
    )


# -- watching -----------------------------------------------------------------


class Progress:
    """Shows counts per task: one rewritten line on a terminal, else a line a second.

    :param totals: the jobs per task.
    :param interactive: rewrite one line (stdout is a terminal, no logs).
    """

    def __init__(self, totals: Mapping[str, int], *, interactive: bool) -> None:
        self._totals = totals
        self._interactive = interactive
        self._last = 0.0
        self._shown = False

    def _line(self, finished: Mapping[str, int], retries: int, elapsed: float) -> str:
        total = sum(self._totals.values())
        done = sum(finished.get(name, 0) for name in self._totals)
        head = f"{elapsed:5.1f}s  {done:3d}/{total} jobs"
        tail = f"  retries {retries}"
        width = shutil.get_terminal_size((100, 20)).columns - 1
        for names in (None, SHORT_NAMES):
            counts = "  ".join(
                f"{(names or {}).get(name, name)} {finished.get(name, 0)}/{count}"
                for name, count in self._totals.items()
            )
            line = f"{head}  |  {counts}{tail}"
            if not self._interactive or len(line) <= width:
                return line

        return line[:width]

    def update(
        self,
        finished: Mapping[str, int],
        retries: int,
        elapsed: float,
        *,
        final: bool = False,
    ) -> None:
        """Show the counts: always on a terminal, else once a second (and last)."""
        line = self._line(finished, retries, elapsed)
        if self._interactive:
            sys.stdout.write(f"\r\x1b[2K{line}")
            sys.stdout.flush()
            self._shown = True
        elif final or time.monotonic() - self._last >= PLAIN_PROGRESS_EVERY:
            self._last = time.monotonic()
            _out(f"  progress {line}")

    def close(self) -> None:
        """End the rewritten line."""
        if self._shown:
            _out()
            self._shown = False


def _pending(connection: psycopg.Connection[Any]) -> int:
    """Jobs still to run: not failed for good, or locked by a worker."""
    row = connection.execute(
        sql.SQL(
            "select count(*) from {}.jobs"
            " where attempts < max_attempts or locked_at is not null"
        ).format(sql.Identifier(DEFAULT_SCHEMA))
    ).fetchone()
    return int(row[0]) if row is not None else 0


@dataclass
class Watch:
    """How watching the jobs ended."""

    complete: bool = False
    timed_out: bool = False
    error: BaseException | None = None


def watch(
    dsn: str,
    state: DemoState,
    progress: Progress,
    stop: Callable[[], None],
    done: threading.Event,
    result: Watch,
) -> None:
    """Show progress, reschedule failed jobs to now, stop the worker when done.

    Runs in a thread of its own beside the worker until ``done`` is set.
    """
    try:
        with (
            psycopg.connect(dsn, autocommit=True) as connection,
            WorkerUtils(connection=connection) as utils,
        ):
            while not state.started.wait(MONITOR_INTERVAL):
                if done.is_set():
                    return

            while not done.wait(MONITOR_INTERVAL):
                retries = state.take_retries()
                if retries:
                    utils.reschedule_jobs(retries, run_at=datetime.now(UTC))

                pending = _pending(connection)
                elapsed = time.monotonic() - state.started_at
                progress.update(state.finished(), state.retries(), elapsed)
                if pending == 0:
                    state.finished_at = time.monotonic()
                    result.complete = True
                    break

                if elapsed > TIMEOUT:
                    state.finished_at = time.monotonic()
                    result.timed_out = True
                    break

    except Exception as exc:
        result.error = exc
        logger.exception("The demo's watcher failed")

    # Stop the worker, but only once it runs: before, stop() is not thread-safe.
    while not (state.started.wait(MONITOR_INTERVAL) or done.is_set()):
        pass

    if not done.is_set():
        stop()


# -- running ----------------------------------------------------------------------


def _options(dsn: str, jobs: int, state: DemoState) -> WorkerOptions:
    options = WorkerOptions(
        dsn=dsn,
        concurrency=jobs,
        poll_interval=POLL_INTERVAL,
        shutdown_grace=SHUTDOWN_GRACE,
        tasks=TASKS,
    )
    options.add_extension(state)
    options.events.on("pool:create", state.on_start)
    options.events.on("job:success", state.on_success)
    options.events.on("job:error", state.on_error)
    return options


def run_worker(
    dsn: str, jobs: int, state: DemoState, progress: Progress, *, threaded: bool
) -> Watch:
    """Run the worker in this thread and a watcher beside it, until all is done."""
    options = _options(dsn, jobs, state)
    done = threading.Event()
    result = Watch()

    def start_watcher(stop: Callable[[], None]) -> threading.Thread:
        watcher = threading.Thread(
            target=watch,
            args=(dsn, state, progress, stop, done, result),
            name="demo-watcher",
            daemon=True,
        )
        watcher.start()
        return watcher

    if threaded:
        worker = Worker(options)
        watcher = start_watcher(worker.stop)
        try:
            worker.run()
        finally:
            done.set()
            watcher.join()
            worker.close()
    else:

        async def serve() -> None:
            async_worker = AsyncWorker(options)
            watcher = start_watcher(async_worker.stop)
            try:
                await async_worker.run()
            finally:
                done.set()
                await asyncio.to_thread(watcher.join)
                await async_worker.close()

        asyncio.run(serve())

    if not state.finished_at:
        state.finished_at = time.monotonic()

    return result


# -- checking and reporting ---------------------------------------------------


@dataclass
class Check:
    """One thing that had to add up."""

    ok: bool
    text: str


def _money(cents: int) -> str:
    return f"{cents / 100:,.2f}"


def check_results(
    connection: psycopg.Connection[Any], state: DemoState, plan: Plan
) -> list[Check]:
    """Compare what ran with what was planned, in the database and in memory."""
    checks: list[Check] = []
    schema = sql.Identifier(DEFAULT_SCHEMA)

    sizes = state.email_sizes
    average = statistics.fmean(sizes) if sizes else 0.0
    checks.append(
        Check(
            state.succeeded["send_welcome_email"] == EMAILS
            and state.failed["send_welcome_email"] == 1,
            f"send_welcome_email: {len(sizes)} of {EMAILS} emails composed and sent "
            f"(average {average:.0f} bytes); the one to {BOUNCING_ADDRESS} failed "
            "for good at once, as max_attempts=1 asks",
        )
    )

    row = connection.execute(
        "select count(*), count(greeting) from demo_users"
    ).fetchone()
    users, greeted = row if row is not None else (0, 0)
    checks.append(
        Check(
            plan.totals["greet_user"] == len(USER_NAMES) == users == greeted,
            f"greet_user: the AFTER INSERT trigger added {plan.totals['greet_user']} "
            f"jobs for {users} users inserted; {greeted} users greeted",
        )
    )

    row = connection.execute(
        "select balance_cents from demo_accounts where id = %s", [ACCOUNT_ID]
    ).fetchone()
    balance = int(row[0]) if row is not None else -1
    serial = state.most_active_transfers == 1
    checks.append(
        Check(
            serial
            and balance == plan.transfer_sum
            and len(state.transfers_done) == TRANSFERS,
            f"bank_transfer: {len(state.transfers_done)} transfers in queue "
            f"{ACCOUNT_QUEUE} "
            f"{'ran one at a time' if serial else 'overlapped'} (at most "
            f"{state.most_active_transfers} at once); balance {_money(balance)} "
            f"{'=' if balance == plan.transfer_sum else '!='} "
            f"{_money(plan.transfer_sum)}, the sum of the transfers",
        )
    )

    attempts = state.report_attempts
    checks.append(
        Check(
            all(attempts.get(period) == [1, 2] for period in REPORTS)
            and len(state.report_means) == len(REPORTS),
            f"flaky_report: {len(REPORTS)} reports each failed on attempt 1, were "
            "rescheduled to run now with reschedule_jobs, and succeeded on attempt 2 "
            f"(means {', '.join(f'{m:.1f}' for m in state.report_means.values())})",
        )
    )

    batches = state.batch_attempts
    retried_items = [ids for attempt, ids in batches if attempt > 1]
    checks.append(
        Check(
            plan.batch_jobs == 1
            and plan.batch_items == len(plan.documents)
            and [attempt for attempt, _ in batches] == [1, 2]
            and retried_items == [[FAILING_DOCUMENT]]
            and all(state.indexed[doc] == 1 for doc in plan.documents),
            f"index_documents: {BATCH_CALLS} add_batch_job calls with job_key "
            f"{BATCH_KEY!r} made {plan.batch_jobs} job of {plan.batch_items} "
            f"documents; document {FAILING_DOCUMENT} failed and attempt 2 retried "
            f"only {retried_items[0] if retried_items else 'nothing'}; "
            f"{len(state.indexed)} documents indexed, {len(state.index)} words",
        )
    )

    rows = connection.execute(
        sql.SQL(
            "select task_identifier, attempts, max_attempts, last_error from {}.jobs"
        ).format(schema)
    ).fetchall()
    left = [row for row in rows if row[1] < row[2]]
    dead = [row for row in rows if row[1] >= row[2]]
    checks.append(
        Check(
            not left and len(dead) == 1 and dead[0][0] == "send_welcome_email",
            f"jobs table: {len(left)} jobs left to run; {len(dead)} failed for good "
            f"and kept for inspection"
            + (f" ({dead[0][0]}: {dead[0][3]})" if len(dead) == 1 else ""),
        )
    )
    return checks


def print_summary(
    state: DemoState, plan: Plan, checks: Sequence[Check], elapsed: float
) -> None:
    """The table of jobs per task, the rate, and the checks."""
    header = ("task", "jobs", "succeeded", "retried", "failed for good")
    counts = {
        name: (
            plan.totals[name],
            state.succeeded[name],
            state.retried[name],
            state.failed[name],
        )
        for name in TASK_ORDER
    }
    columns = zip(*counts.values(), strict=True)
    jobs, succeeded, retried, failed = (sum(column) for column in columns)
    width = max(len(name) for name in TASK_ORDER)
    numbers = [len(title) for title in header[1:]]

    def line(cells: Sequence[object]) -> str:
        first, *rest = cells
        return f"  {first!s:<{width}}" + "".join(
            f"  {cell!s:>{size}}" for cell, size in zip(rest, numbers, strict=True)
        )

    _out()
    _out(line(header))
    _out("  " + "-" * (len(line(header)) - 2))
    for name, row in counts.items():
        _out(line((name, *row)))

    _out("  " + "-" * (len(line(header)) - 2))
    _out(line(("total", jobs, succeeded, retried, failed)))
    finished = succeeded + failed
    attempts = finished + retried
    rate = finished / elapsed if elapsed > 0 else 0.0
    _out()
    _out(
        f"  {finished} jobs finished ({attempts} attempts) in {elapsed:.2f} s: "
        f"{rate:.0f} jobs/s"
    )
    _out()
    for check in checks:
        _say(check.text, indent=f"  {'ok' if check.ok else 'FAILED':<6}  ", hang="")


# -- the command ----------------------------------------------------------------


class _ExpectedFailures(logging.Filter):
    """Hide the worker's logs of the failures the demo causes and reports itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "action", None) not in EXPECTED_LOG_ACTIONS


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``graphile-worker demo``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Add jobs of five example tasks to a fresh database and run them: "
            "typed jobs added in bulk, jobs added by a SQL trigger, a named "
            "queue, a retry, and a batch job. Without -c or $DATABASE_URL it "
            "runs on the embedded PostgreSQL (pip install "
            "'graphile_worker[embedded]')."
        ),
    )
    parser.add_argument(
        "-c",
        "--connection",
        metavar="DSN",
        help="a server to run on (default: $DATABASE_URL, else the embedded "
        "PostgreSQL); the demo drops and creates only its own database there",
    )
    parser.add_argument(
        "--database",
        metavar="NAME",
        default=DEMO_DATABASE,
        help="the demo's database, dropped and created afresh (default: %(default)s)",
    )
    parser.add_argument(
        "-j",
        "--jobs",
        metavar="N",
        type=concurrency,
        default=CONCURRENCY,
        help="jobs to run at once (default: %(default)s)",
    )
    parser.add_argument(
        "--threaded",
        action="store_true",
        help="run the threaded Worker instead of AsyncWorker",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show the worker's logs (and tracebacks with errors)",
    )
    return parser


@contextmanager
def _server(dsn: str | None) -> Iterator[tuple[str, str]]:
    """The server to run on: ``dsn``, else the embedded one, started here.

    :returns: its DSN and a description of where its data lives.
    """
    if dsn:
        yield dsn, "the server of the DSN"
        return

    from graphile_worker.embedded import POSTGRES_VERSION, start_embedded

    _out(
        f"Starting the embedded PostgreSQL {POSTGRES_VERSION} "
        "(its first start runs initdb: a few seconds more)"
    )
    started = time.monotonic()
    server = start_embedded()
    try:
        _out(f"Embedded PostgreSQL ready in {time.monotonic() - started:.1f} s")
        yield server.dsn, f"the embedded PostgreSQL, data dir {server.data_dir}"
    finally:
        server.stop()


def run_demo(args: argparse.Namespace) -> int:
    """Set up, run, check and report; return the exit code."""
    began = time.monotonic()
    given = args.connection or resolve_dsn(None) or None
    with _server(given) as (server_dsn, where):
        if given:
            check_connection(server_dsn)

        admin = _admin_dsn(server_dsn, args.database)
        dsn = recreate_database(admin, args.database)
        with (
            psycopg.connect(dsn, autocommit=True) as connection,
            WorkerUtils(connection=connection) as utils,
        ):
            row = connection.execute("show server_version").fetchone()
            version = str(row[0]).split()[0] if row is not None else "?"
            info = connection.info
            if given and not info.host.startswith("/"):
                where = f"the server at {info.host}:{info.port}"
            utils.migrate()
            plan = add_demo_jobs(utils, connection)

        flavour = "Worker (threads)" if args.threaded else "AsyncWorker"
        _out(f"PostgreSQL {version}; database {args.database} created afresh")
        _say(
            f"Added {sum(plan.totals.values())} jobs: "
            f"{plan.totals['send_welcome_email']} send_welcome_email (one add_jobs "
            f"call), {plan.totals['greet_user']} greet_user (by a trigger), "
            f"{plan.totals['bank_transfer']} bank_transfer (queue {ACCOUNT_QUEUE}), "
            f"{plan.totals['flaky_report']} flaky_report, "
            f"{plan.totals['index_documents']} index_documents "
            f"({BATCH_CALLS} add_batch_job calls, {plan.batch_items} documents)"
        )
        _out(
            f"Running them with {flavour}, {args.jobs} at once, "
            f"polling every {POLL_INTERVAL * 1000:.0f} ms"
        )
        setup = time.monotonic() - began

        interactive = sys.stdout.isatty() and not args.verbose
        progress = Progress(plan.totals, interactive=interactive)
        with ConnectionPool(
            dsn,
            open=False,
            min_size=1,
            max_size=TASK_POOL_SIZE,
            kwargs={"autocommit": True},
            name="demo-tasks",
        ) as pool:
            state = DemoState(pool)
            try:
                result = run_worker(
                    dsn, args.jobs, state, progress, threaded=args.threaded
                )
            finally:
                elapsed = (state.finished_at or time.monotonic()) - (
                    state.started_at or time.monotonic()
                )
                progress.update(state.finished(), state.retries(), elapsed, final=True)
                progress.close()

        with psycopg.connect(dsn, autocommit=True) as connection:
            checks = check_results(connection, state, plan)

        print_summary(state, plan, checks, elapsed)
        _out()
        _out(f"  setup {setup:.2f} s; total {time.monotonic() - began:.2f} s")
        _out(f"  data: database {args.database} on {where}")
        _out(f"  dsn:  {_public_dsn(dsn)}")
        if not given:
            _out(
                "  (the embedded server stops when the demo exits, unless another "
                "process uses it;\n  graphile_worker.embedded.start_embedded() "
                "starts it again)"
            )

    if result.error is not None:
        report_error(f"watching the jobs failed: {result.error}", prog=PROG)
        return EXIT_FAILURE

    if not result.complete:
        if result.timed_out:
            report_error(f"the jobs did not finish within {TIMEOUT:.0f} s", prog=PROG)
            return EXIT_FAILURE

        report_error("interrupted before the jobs were done", prog=PROG)
        return EXIT_INTERRUPTED

    failed = [check for check in checks if not check.ok]
    if failed:
        report_error(
            f"{len(failed)} of {len(checks)} checks did not add up: "
            + "; ".join(check.text.split(":", 1)[0] for check in failed),
            prog=PROG,
        )
        return EXIT_FAILURE

    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``graphile-worker demo`` with ``argv`` (default: ``sys.argv[2:]``).

    :returns: the exit code.
    """
    arguments = list(sys.argv[2:] if argv is None else argv)
    try:
        args = build_parser().parse_args(arguments)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE

    configure_logging(logging.INFO if args.verbose else logging.WARNING)
    if not args.verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_ExpectedFailures())

    try:
        return run_demo(args)
    except KeyboardInterrupt as exc:
        return _fail(EXIT_INTERRUPTED, "interrupted", exc, verbose=args.verbose)
    except ConnectError as exc:
        message = f"cannot connect to the database: {exc}"
        return _fail(EXIT_FAILURE, message, exc, verbose=args.verbose)
    except ConfigurationError as exc:
        return _fail(EXIT_FAILURE, exc, exc, verbose=args.verbose)
    except (GraphileWorkerError, psycopg.Error) as exc:
        message = f"{type(exc).__name__}: {exc}"
        return _fail(EXIT_FAILURE, message, exc, verbose=args.verbose)


def _fail(code: int, message: object, error: BaseException, *, verbose: bool) -> int:
    if verbose:
        sys.stderr.write("".join(traceback.format_exception(error)))

    report_error(message, prog=PROG)
    return code


__all__ = ["TASKS", "main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
