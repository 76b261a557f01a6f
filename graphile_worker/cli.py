"""The ``graphile-worker`` command: install the schema, clean up, run workers.

::

    graphile-worker --tasks myapp.tasks              run jobs until Ctrl-C or SIGTERM
    graphile-worker --tasks myapp.tasks --once       run the runnable jobs, then exit
    graphile-worker --schema-only                    install or upgrade the schema
    graphile-worker --cleanup GC_JOB_QUEUES          clean up the schema, then exit
    graphile-worker --tasks myapp.tasks --crontab F  also add the jobs crontab F names
    graphile-worker crontab check FILE               validate a crontab, show next runs
    graphile-worker demo                             see graphile_worker.demo

``--tasks MODULE`` imports ``MODULE`` (the current directory is importable) and
takes every module-level ``@task`` handler and every Struct defined there with
an ``IDENTIFIER`` and a ``run`` method; ``--tasks MODULE:ATTR`` takes only
``ATTR``, one task definition or a list or tuple of them.

Exit codes, as graphile-worker's where it has one:

====  =========================================================================
0     done, or stopped gracefully by SIGINT or SIGTERM
1     the database cannot be reached, refused a query or cannot be migrated
2     a usage error, a crontab line that does not parse (for ``crontab check``
      also an item that can never fire), or tasks that cannot be loaded
57    the schema holds a breaking migration this release does not know, found
      at start or applied by another process while running
130   interrupted before the worker was running
====  =========================================================================

Errors are reported on stderr in one line; ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from importlib import metadata
from types import FrameType, ModuleType
from typing import Final

import msgspec
import psycopg

from graphile_worker._ahead import LocalQueueSize
from graphile_worker._connect import resolve_dsn
from graphile_worker._migrations import LATEST_MIGRATION
from graphile_worker._sql import DEFAULT_SCHEMA, check_schema
from graphile_worker.cron import CronItem, numbered_crontab
from graphile_worker.errors import (
    ConfigurationError,
    CrontabError,
    DatabaseError,
    MigrationError,
    SchemaTooNewError,
)
from graphile_worker.options import CONCURRENCY, MAX_CONCURRENCY, WorkerOptions
from graphile_worker.task import TaskHandler, handler_of
from graphile_worker.utils import WorkerUtils
from graphile_worker.utils_async import CLEANUP_TASKS, CleanupTask
from graphile_worker.worker import Worker
from graphile_worker.worker_async import AsyncWorker

PROG: Final = "graphile-worker"
EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1  # the database failed, refused or cannot be migrated
EXIT_USAGE: Final = 2  # as argparse exits on a usage error
EXIT_BREAKING: Final = 57  # graphile-worker's code for a breaking migration
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, the shells' convention
POLL_INTERVAL_MS: Final = 2000  # milliseconds between polls, by default
MS_PER_SECOND: Final = 1000
CRONTAB_CHECK_COUNT: Final = 3  # fire times `crontab check` shows per item
LOG_FORMAT: Final = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"
LOG_DATE_FORMAT: Final = "%H:%M:%S"
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)

logger = logging.getLogger(__name__)


class TaskLoadError(Exception):
    """A ``--tasks`` module or attribute that cannot be loaded."""


class ConnectError(Exception):
    """The database cannot be reached; the message is the server's or libpq's."""


def _one_line(text: object) -> str:
    """Join the lines of a message with ``; `` so it fits one line of stderr."""
    parts = (part.strip() for part in str(text).splitlines())
    return "; ".join(part for part in parts if part) or "(no message)"


def report_error(message: object, *, prog: str = PROG) -> None:
    """Write ``<prog>: error: <message>`` to stderr, on one line."""
    sys.stderr.write(f"{prog}: error: {_one_line(message)}\n")
    sys.stderr.flush()


def _fail(
    code: int, message: object, error: BaseException | None, *, verbose: bool
) -> int:
    if verbose and error is not None:
        sys.stderr.write("".join(traceback.format_exception(error)))

    report_error(message)
    return code


def _version() -> str:
    try:
        version = metadata.version("graphile_worker")
    except metadata.PackageNotFoundError:
        version = "unknown"

    return f"%(prog)s {version} (migrations up to {LATEST_MIGRATION}, as Node's 0.18)"


def positive_int(text: str) -> int:
    """Parse a whole number of 1 or more, for argparse.

    :raises argparse.ArgumentTypeError: anything else.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number, not {text!r}"
        ) from None

    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")

    return value


def concurrency(text: str) -> int:
    """Parse a job concurrency, for argparse.

    :raises argparse.ArgumentTypeError: not a whole number from 1 to 10 000.
    """
    value = positive_int(text)
    if value > MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_CONCURRENCY}, not {value}"
        )

    return value


def schema_name(text: str) -> str:
    """Parse a schema name, for argparse.

    :raises argparse.ArgumentTypeError: a name PostgreSQL would refuse or
        truncate (see :func:`graphile_worker._sql.check_schema`).
    """
    try:
        return check_schema(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _local_queue_size(text: str) -> LocalQueueSize:
    if text == "auto":
        return "auto"

    try:
        value = int(text)
    except ValueError:
        value = -1

    if not 0 <= value <= MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(
            f"expected 'auto' or a whole number from 0 to {MAX_CONCURRENCY}, "
            f"not {text!r}"
        )

    return value


def _cleanup_tasks(text: str) -> list[CleanupTask]:
    wanted: list[CleanupTask] = []
    for name in (part.strip() for part in text.split(",")):
        if not name:
            continue

        matches = [known for known in CLEANUP_TASKS if known == name]
        if not matches:
            raise argparse.ArgumentTypeError(
                f"unknown cleanup task {name!r}; choose from {', '.join(CLEANUP_TASKS)}"
            )

        wanted.append(matches[0])

    if not wanted:
        raise argparse.ArgumentTypeError(
            f"name at least one of {', '.join(CLEANUP_TASKS)}"
        )

    return wanted


def add_jobs_option(parser: argparse.ArgumentParser) -> None:
    """Add ``-j/--jobs``, how many jobs a worker runs at once."""
    parser.add_argument(
        "-j",
        "--jobs",
        metavar="N",
        type=concurrency,
        default=CONCURRENCY,
        help="jobs to run at once (default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of the main command (``demo`` has its own)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=(
            "%(prog)s [options] --tasks MODULE[:ATTR] ...\n"
            "       %(prog)s --schema-only | --cleanup TASKS [options]\n"
            "       %(prog)s demo [-c DSN] [-j N] [--threaded]"
        ),
        description=(
            "Run graphile_worker jobs stored in PostgreSQL (schema-compatible "
            "with graphile-worker 0.18), install its schema, or clean it up."
        ),
        epilog=(
            "exit codes: 0 done or stopped by SIGINT/SIGTERM; 1 database error; "
            "2 usage error or tasks that cannot be loaded; 57 breaking schema "
            "migration newer than this release; 130 interrupted while starting. "
            "'%(prog)s demo --help' describes the demonstration."
        ),
    )
    parser.add_argument(
        "-c",
        "--connection",
        metavar="DSN",
        help="PostgreSQL connection string or URI (default: $DATABASE_URL, "
        "else libpq's PG* variables)",
    )
    parser.add_argument(
        "-s",
        "--schema",
        metavar="NAME",
        type=schema_name,
        default=DEFAULT_SCHEMA,
        help="schema holding the queue, at most 63 bytes (default: %(default)s)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--schema-only",
        action="store_true",
        help="install or upgrade the schema, then exit",
    )
    mode.add_argument(
        "--once",
        action="store_true",
        help="run the jobs that are runnable now, then exit",
    )
    mode.add_argument(
        "--cleanup",
        metavar="TASKS",
        type=_cleanup_tasks,
        help=f"run these comma-separated cleanup tasks, then exit: "
        f"{', '.join(CLEANUP_TASKS)} (tasks named by --tasks are kept)",
    )
    parser.add_argument(
        "--tasks",
        metavar="MODULE[:ATTR]",
        action="append",
        default=[],
        help="import task definitions from MODULE (repeatable): every @task "
        "handler and task Struct it defines, or only ATTR (one definition or a "
        "list of them); the current directory is importable",
    )
    add_jobs_option(parser)
    parser.add_argument(
        "-m",
        "--max-pool-size",
        metavar="N",
        type=positive_int,
        help="most connections in the worker's pool (default: jobs + 2)",
    )
    parser.add_argument(
        "--poll-interval",
        metavar="MS",
        type=positive_int,
        default=POLL_INTERVAL_MS,
        help="milliseconds between polls for jobs due later or to retry "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--local-queue-size",
        metavar="N|auto",
        type=_local_queue_size,
        default="auto",
        help="jobs to claim ahead of free slots, so one claim serves many short "
        "jobs: a number (0: off) or 'auto', about 20 ms of work by recent run "
        "times (default: %(default)s)",
    )
    parser.add_argument(
        "--no-prepared-statements",
        action="store_true",
        help="do not prepare statements, for poolers such as PgBouncer in "
        "transaction mode",
    )
    parser.add_argument(
        "--threaded",
        action="store_true",
        help="run the threaded Worker (blocking tasks only) instead of AsyncWorker",
    )
    parser.add_argument(
        "--crontab",
        metavar="FILE",
        help="add the recurring jobs this crontab file asks for (UTC, as "
        "graphile-worker reads it)",
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log debug messages, and tracebacks with errors",
    )
    verbosity.add_argument(
        "-q", "--quiet", action="store_true", help="log warnings and errors only"
    )
    parser.add_argument("--version", action="version", version=_version())
    return parser


def configure_logging(level: int) -> None:
    """Send log records to stderr in a compact format, at ``level`` and above.

    psycopg's own INFO messages are shown only at DEBUG.
    """
    logging.basicConfig(
        level=level,
        format=LOG_FORMAT,
        datefmt=LOG_DATE_FORMAT,
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("psycopg").setLevel(
        logging.DEBUG if level <= logging.DEBUG else max(level, logging.WARNING)
    )


def make_cwd_importable() -> None:
    """Put the current directory first on ``sys.path``, as ``python -m`` does."""
    cwd = os.getcwd()
    if sys.path[:1] not in ([""], [cwd]):
        sys.path.insert(0, cwd)


def _import(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        raise TaskLoadError(
            f"cannot import task module {module_name!r}: "
            f"{type(exc).__name__}: {_one_line(exc)}"
        ) from exc


def _is_struct_task(value: object) -> bool:
    return (
        isinstance(value, type)
        and issubclass(value, msgspec.Struct)
        and isinstance(getattr(value, "IDENTIFIER", None), str)
        and callable(getattr(value, "run", None))
    )


def _module_tasks(module: ModuleType) -> list[object]:
    """The module-level ``@task`` handlers and the task Structs the module defines."""
    return [
        value
        for value in vars(module).values()
        if isinstance(value, TaskHandler)
        or (_is_struct_task(value) and value.__module__ == module.__name__)
    ]


def _definitions(spec: str) -> list[object]:
    module_name, colon, attribute = (part.strip() for part in spec.partition(":"))
    if not module_name or (colon and not attribute):
        raise TaskLoadError(f"--tasks {spec!r}: expected MODULE or MODULE:ATTR")

    module = _import(module_name)
    if not attribute:
        found = _module_tasks(module)
        if not found:
            raise TaskLoadError(
                f"no tasks found in module {module_name!r}: it defines no @task "
                "handler and no Struct with IDENTIFIER and run(); name them with "
                "MODULE:ATTR"
            )

        return found

    value: object = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise TaskLoadError(
                f"task module {module_name!r} has no attribute {attribute!r}"
            ) from None

    definitions = list(value) if isinstance(value, list | tuple) else [value]
    if not definitions:
        raise TaskLoadError(f"no tasks found in {module_name}:{attribute}: it is empty")

    return definitions


def load_tasks(specs: Sequence[str]) -> list[TaskHandler]:
    """Import the task definitions named by ``--tasks`` options.

    :param specs: ``MODULE`` or ``MODULE:ATTR`` strings.
    :returns: one handler per definition, in order, each definition once.
    :raises TaskLoadError: a module that does not import, a missing attribute,
        a module without tasks, or something that is not a task.
    """
    handlers: list[TaskHandler] = []
    seen: set[int] = set()
    for spec in specs:
        for definition in _definitions(spec):
            if id(definition) in seen:
                continue

            seen.add(id(definition))
            try:
                handlers.append(handler_of(definition))
            except ConfigurationError as exc:
                raise TaskLoadError(f"--tasks {spec}: {exc}") from exc

    identifiers: dict[str, TaskHandler] = {}
    for handler in handlers:
        other = identifiers.setdefault(handler.identifier, handler)
        if other is not handler:
            raise TaskLoadError(
                f"task {handler.identifier!r} is defined twice: {other!r} and "
                f"{handler!r}"
            )

    return handlers


def check_connection(dsn: str) -> None:
    """Open and close one connection, to fail early with the server's words.

    :raises ConnectError: the DSN is malformed or the server refused us.
    """
    try:
        with psycopg.connect(dsn, autocommit=True):
            pass
    except psycopg.Error as exc:
        raise ConnectError(_one_line(exc)) from exc


def read_crontab(path: str) -> list[tuple[int, CronItem]]:
    """Read and parse a crontab file.

    :returns: each item with the number of its line.
    :raises CrontabError: the file cannot be read, or a line does not parse;
        the message names the file and the line.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise CrontabError(f"{path}: cannot read: {exc.strerror}") from exc

    try:
        return numbered_crontab(text)
    except CrontabError as exc:
        raise CrontabError(f"{path}: {exc}") from exc


def check_crontab(arguments: Sequence[str]) -> int:
    """``graphile-worker crontab check FILE``: validate and show next fire times.

    Each item's next fire times go to stdout. A line that does not parse, and
    each item that can never fire (such as ``0 0 30 2 *``, the 30th of
    February), is an error on stderr naming its line, and the exit status is 2.
    """
    parser = argparse.ArgumentParser(
        prog=f"{PROG} crontab check",
        description="Check a crontab file and print each item's next fire times.",
    )
    parser.add_argument("file", metavar="FILE")
    parser.add_argument(
        "-n",
        "--count",
        type=positive_int,
        default=CRONTAB_CHECK_COUNT,
        help="fire times to show per item (default: %(default)s)",
    )
    args = parser.parse_args(arguments)
    try:
        items = read_crontab(args.file)
    except CrontabError as exc:
        report_error(exc)
        return EXIT_USAGE

    now = datetime.now(UTC)
    never: list[str] = []
    for number, item in items:
        try:
            upcoming = item.next_fire_times(now, args.count)
        except CrontabError as exc:
            if item.never_fires:
                never.append(f"{args.file}: line {number}: {exc}")
            else:
                _write(f"{item.identifier} -> task {item.task}: {exc}")

            continue

        times = ", ".join(moment.strftime("%Y-%m-%d %H:%M") for moment in upcoming)
        _write(f"{item.identifier} -> task {item.task}: {times} (UTC)")

    if never:
        sys.stdout.flush()
        for message in never:
            report_error(message)

        return EXIT_USAGE

    _write(f"{args.file}: {len(items)} items, all valid")
    return EXIT_OK


def _write(line: str) -> None:
    sys.stdout.write(line + "\n")


def _options(
    args: argparse.Namespace,
    dsn: str,
    tasks: list[TaskHandler],
    crontab: list[CronItem] | None,
) -> WorkerOptions:
    return WorkerOptions(
        dsn=dsn,
        schema=args.schema,
        concurrency=args.jobs,
        poll_interval=args.poll_interval / MS_PER_SECOND,
        max_pool_size=args.max_pool_size,
        prepared_statements=not args.no_prepared_statements,
        local_queue_size=args.local_queue_size,
        tasks=tasks,
        crontab=crontab,
    )


def _stopper(stop: Callable[[bool], None]) -> Callable[[], None]:
    """A signal reaction: stop gracefully the first time, at once the next."""
    received = 0

    def on_signal() -> None:
        nonlocal received
        received += 1
        force = received > 1
        logger.warning(
            "Interrupted: %s",
            "stopping now" if force else "finishing running jobs (again to stop now)",
        )
        stop(force)

    return on_signal


@contextlib.contextmanager
def _async_signals(worker: AsyncWorker) -> Iterator[None]:
    """Stop the worker on SIGINT/SIGTERM during ``run_once``, which has no handlers."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if threading.current_thread() is threading.main_thread():
        on_signal = _stopper(lambda force: worker.stop(force=force))
        for signum in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, on_signal)
                installed.append(signum)

    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


@contextlib.contextmanager
def _thread_signals(worker: Worker) -> Iterator[None]:
    """Stop the threaded worker on SIGINT/SIGTERM while ``run_once`` runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    on_signal = _stopper(lambda force: worker.stop(force=force))

    def handler(signum: int, frame: FrameType | None) -> None:
        # Not in the handler itself: stopping takes locks the main thread may hold.
        threading.Thread(target=on_signal, daemon=True).start()

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


async def _serve_async(options: WorkerOptions, *, once: bool) -> int | None:
    worker = AsyncWorker(options)
    try:
        await worker.open()
        if once:
            with _async_signals(worker):
                await worker.run_once()
        else:
            await worker.run()
    finally:
        await worker.close()

    return worker.breaking_migration


def _serve_threaded(options: WorkerOptions, *, once: bool) -> int | None:
    worker = Worker(options)
    try:
        worker.open()
        if once:
            with _thread_signals(worker):
                worker.run_once()
        else:
            worker.run()
    finally:
        worker.close()

    return worker.breaking_migration


def _maintain(args: argparse.Namespace, dsn: str, tasks: list[TaskHandler]) -> int:
    """``--schema-only`` and ``--cleanup``: migrate, maybe clean up, exit."""
    with WorkerUtils(dsn=dsn, schema=args.schema) as utils:
        applied = utils.migrate()
        if applied:
            logger.info(
                "Schema %s migrated: applied %d to %d",
                args.schema,
                applied[0],
                applied[-1],
            )
        else:
            logger.info("Schema %s was already up to date", args.schema)

        if args.cleanup is not None:
            utils.cleanup(
                args.cleanup,
                task_identifiers_to_keep=[task.identifier for task in tasks],
            )
            logger.info(
                "Cleanup of schema %s done: %s", args.schema, ", ".join(args.cleanup)
            )

    return EXIT_OK


def _run(args: argparse.Namespace, tasks: list[TaskHandler]) -> int:
    dsn = resolve_dsn(args.connection)
    crontab = [item for _, item in read_crontab(args.crontab)] if args.crontab else None
    check_connection(dsn)
    if args.schema_only or args.cleanup is not None:
        return _maintain(args, dsn, tasks)

    options = _options(args, dsn, tasks, crontab)
    if args.threaded:
        breaking = _serve_threaded(options, once=args.once)
    else:
        breaking = asyncio.run(_serve_async(options, once=args.once))

    if breaking is None:
        return EXIT_OK

    shown = "" if breaking < 0 else f" {breaking}"
    report_error(
        f"breaking migration{shown} was applied to schema {args.schema!r} while "
        "the worker ran; it is unsafe to continue with this release, so it stopped"
    )
    return EXIT_BREAKING


def _main(arguments: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(arguments)
    verbose: bool = args.verbose
    level = (
        logging.DEBUG if verbose else logging.WARNING if args.quiet else logging.INFO
    )
    configure_logging(level)

    if args.tasks:
        make_cwd_importable()

    try:
        tasks = load_tasks(args.tasks)
    except TaskLoadError as exc:
        return _fail(EXIT_USAGE, exc, exc.__cause__ or exc, verbose=verbose)

    if not tasks and not (args.schema_only or args.cleanup is not None):
        parser.print_usage(sys.stderr)
        report_error("no tasks to run: name them with --tasks MODULE[:ATTR]")
        return EXIT_USAGE

    try:
        return _run(args, tasks)
    except CrontabError as exc:
        return _fail(EXIT_USAGE, exc, exc, verbose=verbose)
    except ConnectError as exc:
        return _fail(
            EXIT_FAILURE, f"cannot connect to the database: {exc}", exc, verbose=verbose
        )
    except SchemaTooNewError as exc:
        return _fail(EXIT_BREAKING, exc, exc, verbose=verbose)
    except ConfigurationError as exc:
        return _fail(EXIT_USAGE, exc, exc, verbose=verbose)
    except MigrationError as exc:
        return _fail(EXIT_FAILURE, exc, exc, verbose=verbose)
    except DatabaseError as exc:
        return _fail(EXIT_FAILURE, f"database error: {exc}", exc, verbose=verbose)
    except KeyboardInterrupt as exc:
        return _fail(EXIT_INTERRUPTED, "interrupted", exc, verbose=verbose)


def _exit_code(code: object) -> int:
    if code is None:
        return EXIT_OK

    if isinstance(code, int):
        return code

    report_error(code)
    return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: ``sys.argv[1:]``).

    :returns: the exit code; argparse's own exits (``--help``, usage errors)
        are returned too rather than raised.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        if arguments[:2] == ["crontab", "check"]:
            return check_crontab(arguments[2:])

        if arguments[:1] == ["demo"]:
            from graphile_worker.demo import main as demo_main

            return demo_main(arguments[1:])

        return _main(arguments)
    except SystemExit as exc:
        return _exit_code(exc.code)


__all__ = ["load_tasks", "main"]
