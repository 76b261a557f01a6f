"""The demo's checks that everything added up, and the summary it prints."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from graphile_worker.demo.console import out, say
from graphile_worker.demo.database import jobs_query
from graphile_worker.demo.seed import (
    ACCOUNT_QUEUE,
    BATCH_CALLS,
    BATCH_KEY,
    BOUNCING_ADDRESS,
    EMAILS,
    REPORTS,
    TRANSFERS,
    USER_NAMES,
    Plan,
)
from graphile_worker.demo.state import DemoState
from graphile_worker.demo.tasks import (
    ACCOUNT_ID,
    BALANCE_SQL,
    FAILING_DOCUMENT,
    TASK_ORDER,
)


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

    row = connection.execute(BALANCE_SQL, [ACCOUNT_ID]).fetchone()
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
        jobs_query(
            "select task_identifier, attempts, max_attempts, last_error"
            " from {schema}.jobs"
        )
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

    rule = "  " + "-" * (len(line(header)) - 2)
    out()
    out(line(header))
    out(rule)
    for name, row in counts.items():
        out(line((name, *row)))

    out(rule)
    out(line(("total", jobs, succeeded, retried, failed)))
    finished = succeeded + failed
    attempts = finished + retried
    rate = finished / elapsed if elapsed > 0 else 0.0
    out()
    out(
        f"  {finished} jobs finished ({attempts} attempts) in {elapsed:.2f} s: "
        f"{rate:.0f} jobs/s"
    )
    out()
    for check in checks:
        say(check.text, indent=f"  {'ok' if check.ok else 'FAILED':<6}  ", hang="")


__all__ = ["Check", "check_results", "print_summary"]
