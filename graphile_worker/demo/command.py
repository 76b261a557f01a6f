"""``graphile-worker demo``'s command line: its options, logging and errors."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from typing import Final

import psycopg

from graphile_worker.cli import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    ConnectError,
    add_jobs_option,
    configure_logging,
    report_error,
)
from graphile_worker.demo.database import DEMO_DATABASE
from graphile_worker.demo.run import PROG, run_demo
from graphile_worker.errors import ConfigurationError, GraphileWorkerError

EXPECTED_LOG_ACTIONS: Final = frozenset({"job_retry", "job_failed"})


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
    add_jobs_option(parser)
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


__all__ = ["build_parser", "main"]
