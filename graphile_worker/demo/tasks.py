"""The demo's five tasks: Struct tasks, ``@task`` functions and a batch task."""

from __future__ import annotations

import hashlib
import random
import re
import statistics
import time
from typing import ClassVar, Final

import msgspec

from graphile_worker.demo.state import Context, state_of
from graphile_worker.task import task

PROJECTS_PER_PLAN: Final = {"free": 1, "team": 10, "enterprise": 100}
ACCOUNT_ID: Final = 42
BALANCE_SQL: Final = "select balance_cents from demo_accounts where id = %s"
REPORT_SAMPLES: Final = 2000
FAILING_DOCUMENT: Final = 17  # fails on the batch's first attempt only
EMAIL_DELAY: Final = (0.002, 0.012)  # seconds, bounds of a simulated SMTP call
TRANSFER_DELAY: Final = 0.01  # seconds between reading and writing the balance
WORD: Final = re.compile(r"[a-z]+")

TASK_ORDER: Final = (
    "send_welcome_email",
    "greet_user",
    "bank_transfer",
    "flaky_report",
    "index_documents",
)


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
        state = state_of(ctx)
        with state.lock:
            state.email_sizes.append(len(body.encode()))


class GreetUser(msgspec.Struct, frozen=True):
    """The payload the ``demo_users`` trigger builds with ``json_build_object``."""

    user_id: int
    name: str


@task("greet_user")
def greet_user(user: GreetUser, ctx: Context) -> None:
    """An ``@task`` function: store a greeting on the user's row."""
    with state_of(ctx).pool.connection() as connection:
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
        state = state_of(ctx)
        with state.transfer(self.transfer_id), state.pool.connection() as connection:
            row = connection.execute(BALANCE_SQL, [ACCOUNT_ID]).fetchone()
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
        state = state_of(ctx)
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
    state = state_of(ctx)
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

__all__ = [
    "ACCOUNT_ID",
    "BALANCE_SQL",
    "FAILING_DOCUMENT",
    "PROJECTS_PER_PLAN",
    "TASKS",
    "TASK_ORDER",
    "BankTransfer",
    "FlakyReport",
    "GreetUser",
    "IndexDocument",
    "SendWelcomeEmail",
    "greet_user",
    "index_documents",
]
