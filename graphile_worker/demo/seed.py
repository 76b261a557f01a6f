"""The demo's tables, its trigger, and every job it adds before the worker starts."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Final

import psycopg

from graphile_worker._sql import DEFAULT_SCHEMA
from graphile_worker.demo.database import count_jobs
from graphile_worker.demo.tasks import (
    ACCOUNT_ID,
    PROJECTS_PER_PLAN,
    BankTransfer,
    FlakyReport,
    IndexDocument,
    SendWelcomeEmail,
)
from graphile_worker.models import JobSpec
from graphile_worker.utils import WorkerUtils

EMAILS: Final = 200
BOUNCING_ADDRESS: Final = "nobody@bounce.example.invalid"
USER_NAMES: Final = (
    "Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken",
    "Margaret", "Dennis", "Radia", "Tim", "Katherine", "John", "Shafi", "Leslie",
    "Hedy", "Niklaus", "Sophie", "Guido",
)  # fmt: skip
ACCOUNT_QUEUE: Final = f"account-{ACCOUNT_ID}"
TRANSFERS: Final = 25
REPORTS: Final = ("daily", "weekly", "monthly")
BATCH_KEY: Final = "index-documents"
BATCH_CALLS: Final = 4  # add_batch_job calls that merge into one job
DOCUMENTS_PER_CALL: Final = 10
DOCUMENT_WORDS: Final = ("queue", "worker", "job", "retry", "batch", "postgres",
    "listen", "notify", "schema", "lock", "trigger", "payload", "backoff", "cron",
    "python", "async", "thread", "pool", "index")  # fmt: skip

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
    greetings = count_jobs(connection, "task_identifier = 'greet_user'")

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


__all__ = [
    "ACCOUNT_QUEUE",
    "BATCH_CALLS",
    "BATCH_KEY",
    "BOUNCING_ADDRESS",
    "EMAILS",
    "REPORTS",
    "TRANSFERS",
    "USER_NAMES",
    "Plan",
    "add_demo_jobs",
]
