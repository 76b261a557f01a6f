"""Runtime SQL: the named queries of ``sql/queries.sql``, loaded once per schema."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import final

import msgspec

from graphile_worker.errors import ConfigurationError

DEFAULT_SCHEMA = "graphile_worker"
MAX_SCHEMA_BYTES = 63  # bytes: NAMEDATALEN - 1, the longest PostgreSQL identifier
SCHEMA_PLACEHOLDER = "{{schema}}"

# The columns every job-returning query selects, in the order models.Job expects;
# the bare form leaves the task and queue names to be resolved by the caller.
_JOB_COLUMNS = (
    "job.id, job.job_queue_id, {queue_name}, job.task_id, {identifier}, "
    "job.payload::text, job.priority, job.run_at, job.attempts, "
    "job.max_attempts, job.last_error, job.created_at, job.updated_at, job.key, "
    "job.locked_at, job.locked_by, job.revision, job.flags::text"
)
JOB_COLUMNS = _JOB_COLUMNS.format(
    queue_name="queues.queue_name", identifier="tasks.identifier"
)
BARE_JOB_COLUMNS = _JOB_COLUMNS.format(queue_name="null", identifier="null")
CLAIM_COLUMNS = _JOB_COLUMNS.format(queue_name="queues.queue_name", identifier="null")

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def quote_ident(name: str) -> str:
    """Quote ``name`` as a PostgreSQL identifier, whatever characters it holds."""
    return '"' + name.replace('"', '""') + '"'


def check_schema(schema: object) -> str:
    """Return ``schema`` if PostgreSQL would keep it, unchanged, as a schema name.

    Every schema name reaches SQL through :func:`queries` or :func:`substitute`,
    which both check it here. The length is counted in UTF-8, the usual server
    encoding.

    :raises ConfigurationError: not a string; empty, which PostgreSQL refuses;
        holding a NUL character, which it cannot store; or longer than 63
        bytes, which it would silently truncate (so two long names sharing
        their first 63 bytes would be one schema).
    """
    if not isinstance(schema, str):
        raise ConfigurationError(
            f"schema must be a string, not {type(schema).__name__}"
        )

    if not schema:
        raise ConfigurationError("schema name must not be empty")

    if "\x00" in schema:
        raise ConfigurationError(
            f"schema name {schema[:40]!r} contains a NUL character, which "
            "PostgreSQL cannot store"
        )

    size = len(schema.encode())
    if size > MAX_SCHEMA_BYTES:
        shown = schema if len(schema) <= 40 else schema[:40] + "..."
        raise ConfigurationError(
            f"schema name {shown!r} is {size} bytes long in UTF-8; "
            f"PostgreSQL keeps only the first {MAX_SCHEMA_BYTES} bytes of an "
            "identifier, so use a shorter name"
        )

    return schema


def substitute(text: str, schema: str) -> str:
    """Put the quoted ``schema`` where the SQL text says ``{{schema}}``.

    :raises ConfigurationError: a schema name PostgreSQL would refuse or change.
    """
    return text.replace(SCHEMA_PLACEHOLDER, quote_ident(check_schema(schema)))


@final
class Queries(msgspec.Struct, frozen=True):
    """The runtime queries with one schema substituted in."""

    server_state: str
    bootstrap: str
    mark_breaking: str
    record_migrations: str
    notify_migrated: str
    add_job: str
    add_jobs: str
    remove_job: str
    complete_jobs: str
    permanently_fail_jobs: str
    reschedule_jobs: str
    force_unlock_workers: str
    gc_task_identifiers: str
    gc_job_queues: str
    delete_permafailed_jobs: str
    task_ids: str
    job_names: str
    claim_jobs: str
    complete_claimed: str
    fail_claimed: str
    return_claimed: str
    reset_stale_locks: str
    cron_known: str
    cron_register: str
    cron_schedule: str


def parse_named_queries(text: str) -> dict[str, str]:
    """Split a file of ``-- name: x`` sections into a name-to-SQL mapping."""
    parts = _HEADER.split(text)
    named: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in named:
            raise ValueError(f"query {name!r} is defined twice")

        named[name] = body.strip()

    return named


@cache
def _templates() -> dict[str, str]:
    text = resources.files("graphile_worker").joinpath("sql/queries.sql").read_text()
    named = parse_named_queries(text)
    expected = set(Queries.__struct_fields__)
    if set(named) != expected:
        raise RuntimeError(
            "sql/queries.sql does not match Queries: "
            f"missing {sorted(expected - set(named))}, "
            f"unexpected {sorted(set(named) - expected)}"
        )

    return {
        name: body.replace("{{job_columns}}", JOB_COLUMNS).replace(
            "{{bare_job_columns}}", BARE_JOB_COLUMNS
        ).replace("{{job_columns_no_task}}", CLAIM_COLUMNS)
        for name, body in named.items()
    }


@cache
def queries(schema: str = DEFAULT_SCHEMA) -> Queries:
    """Return the runtime queries for ``schema``, built once per schema name.

    :raises ConfigurationError: a schema name PostgreSQL would refuse or change.
    """
    check_schema(schema)
    return Queries(
        **{name: substitute(body, schema) for name, body in _templates().items()}
    )
