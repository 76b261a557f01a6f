"""The demo from start to end: set up, run the jobs, check, report, exit code."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Final

import psycopg
from psycopg_pool import ConnectionPool

from graphile_worker._connect import resolve_dsn
from graphile_worker.cli import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    check_connection,
    report_error,
)
from graphile_worker.demo.console import out, say
from graphile_worker.demo.database import (
    admin_dsn,
    connect,
    public_dsn,
    recreate_database,
    server,
)
from graphile_worker.demo.progress import Progress
from graphile_worker.demo.report import Check, check_results, print_summary
from graphile_worker.demo.runner import POLL_INTERVAL, TIMEOUT, Watch, run_worker
from graphile_worker.demo.seed import ACCOUNT_QUEUE, BATCH_CALLS, Plan, add_demo_jobs
from graphile_worker.demo.state import DemoState

PROG: Final = "graphile-worker demo"
TASK_POOL_SIZE: Final = 4  # connections the tasks share for their own queries


def run_demo(args: argparse.Namespace) -> int:
    """Set up, run, check and report; return the exit code."""
    began = time.monotonic()
    given = args.connection or resolve_dsn(None) or None
    with server(given) as (server_dsn, where):
        if given:
            check_connection(server_dsn)

        dsn = recreate_database(admin_dsn(server_dsn, args.database), args.database)
        with connect(dsn) as (connection, utils):
            row = connection.execute("show server_version").fetchone()
            version = str(row[0]).split()[0] if row is not None else "?"
            info = connection.info
            if given and not info.host.startswith("/"):
                where = f"the server at {info.host}:{info.port}"
            utils.migrate()
            plan = add_demo_jobs(utils, connection)

        _announce(args, version, plan)
        setup = time.monotonic() - began
        state, result, elapsed = _run_jobs(args, dsn, plan)
        with psycopg.connect(dsn, autocommit=True) as connection:
            checks = check_results(connection, state, plan)

        print_summary(state, plan, checks, elapsed)
        out()
        out(f"  setup {setup:.2f} s; total {time.monotonic() - began:.2f} s")
        out(f"  data: database {args.database} on {where}")
        out(f"  dsn:  {public_dsn(dsn)}")
        if not given:
            out(
                "  (the embedded server stops when the demo exits, unless another "
                "process uses it;\n  graphile_worker.embedded.start_embedded() "
                "starts it again)"
            )

    return _exit_code(result, checks)


def _announce(args: argparse.Namespace, version: str, plan: Plan) -> None:
    """Say where the demo runs, which jobs it added and how it will run them."""
    flavour = "Worker (threads)" if args.threaded else "AsyncWorker"
    out(f"PostgreSQL {version}; database {args.database} created afresh")
    say(
        f"Added {sum(plan.totals.values())} jobs: "
        f"{plan.totals['send_welcome_email']} send_welcome_email (one add_jobs "
        f"call), {plan.totals['greet_user']} greet_user (by a trigger), "
        f"{plan.totals['bank_transfer']} bank_transfer (queue {ACCOUNT_QUEUE}), "
        f"{plan.totals['flaky_report']} flaky_report, "
        f"{plan.totals['index_documents']} index_documents "
        f"({BATCH_CALLS} add_batch_job calls, {plan.batch_items} documents)"
    )
    out(
        f"Running them with {flavour}, {args.jobs} at once, "
        f"polling every {POLL_INTERVAL * 1000:.0f} ms"
    )


def _run_jobs(
    args: argparse.Namespace, dsn: str, plan: Plan
) -> tuple[DemoState, Watch, float]:
    """Run the worker until the jobs are done, showing their progress.

    :returns: what the tasks recorded, how watching ended, and the seconds the
        jobs took.
    """
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
            result = run_worker(dsn, args.jobs, state, progress, threaded=args.threaded)
        finally:
            elapsed = (state.finished_at or time.monotonic()) - (
                state.started_at or time.monotonic()
            )
            progress.update(state.finished(), state.retries(), elapsed, final=True)
            progress.close()

    return state, result, elapsed


def _exit_code(result: Watch, checks: Sequence[Check]) -> int:
    """0 when the jobs finished and every check added up; else say why not."""
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


__all__ = ["PROG", "run_demo"]
