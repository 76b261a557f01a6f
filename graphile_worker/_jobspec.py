"""Checking job specs and turning them into query parameters, before any SQL.

Everything here is pure, so both the async and the blocking utilities use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from graphile_worker._sql import BARE_JOB_COLUMNS, JOB_COLUMNS
from graphile_worker.errors import ConfigurationError, InvalidJobError
from graphile_worker.models import DEFAULT_SPEC, Job, JobSpec, RawJob, TaskPayload

MAX_IDENTIFIER_LENGTH = 128  # characters, as the schema's check constraints say
MAX_QUEUE_NAME_LENGTH = 128  # characters
MAX_JOB_KEY_LENGTH = 512  # characters
SMALLINT_MIN = -32768
SMALLINT_MAX = 32767
JOB_KEY_MODES = frozenset({"replace", "preserve_run_at", "unsafe_dedupe"})

# A JSON \u0000 escape that is not itself an escaped backslash followed by text.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")

_encoder = msgspec.json.Encoder()
_decode_flags = msgspec.json.Decoder(dict[str, bool] | None).decode

assert JOB_COLUMNS.count(",") == BARE_JOB_COLUMNS.count(",") == 17, "18 columns"


def _storable(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidJobError(f"{what} must be a string, not {type(value).__name__}")

    if "\x00" in value:
        raise InvalidJobError(
            f"{what} contains a NUL character, which PostgreSQL cannot store: "
            f"{value[:40]!r}"
        )

    return value


def _text(value: object, what: str, *, low: int, high: int) -> str:
    value = _storable(value, what)

    if not low <= len(value) <= high:
        raise InvalidJobError(
            f"{what} must be {low} to {high} characters long, not {len(value)}: "
            f"{value[:40]!r}"
        )

    return value


def _smallint(value: object, what: str, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJobError(f"{what} must be an integer, not {type(value).__name__}")

    if not low <= value <= SMALLINT_MAX:
        raise InvalidJobError(f"{what} must be between {low} and {SMALLINT_MAX}")

    return value


def check_identifier(identifier: object) -> str:
    """Return ``identifier`` if it can name a task.

    :raises InvalidJobError: not a string of 1 to 128 characters.
    """
    return _text(identifier, "task identifier", low=1, high=MAX_IDENTIFIER_LENGTH)


def identifier_of(task: object) -> str:
    """Return the ``IDENTIFIER`` of a typed task payload.

    :raises InvalidJobError: the object is not a task payload.
    """
    identifier = getattr(type(task), "IDENTIFIER", None)
    if identifier is None:
        raise InvalidJobError(
            f"{type(task).__name__} has no class-level IDENTIFIER; use a task "
            "payload Struct, or add_raw_job with an identifier"
        )

    return check_identifier(identifier)


def check_spec(spec: JobSpec, *, batch: bool = False) -> JobSpec:
    """Validate every field of ``spec``; return it unchanged.

    :raises InvalidJobError: the first field that cannot be stored, named.
    """
    if spec.queue_name is not None:
        _text(spec.queue_name, "queue_name", low=1, high=MAX_QUEUE_NAME_LENGTH)

    if spec.job_key is not None:
        _text(spec.job_key, "job_key", low=1, high=MAX_JOB_KEY_LENGTH)

    if spec.max_attempts is not None:
        _smallint(spec.max_attempts, "max_attempts", low=1)

    if spec.priority is not None:
        _smallint(spec.priority, "priority", low=SMALLINT_MIN)

    if spec.run_at is not None:
        if not isinstance(spec.run_at, datetime):
            raise InvalidJobError(
                f"run_at must be a datetime, not {type(spec.run_at).__name__}"
            )

        if spec.run_at.utcoffset() is None:
            raise InvalidJobError(
                "run_at must be timezone-aware (for example "
                "datetime.now(timezone.utc)); a naive datetime is ambiguous"
            )

    if spec.job_key_mode is not None and spec.job_key_mode not in JOB_KEY_MODES:
        raise InvalidJobError(
            f"job_key_mode must be one of {sorted(JOB_KEY_MODES)}, "
            f"not {spec.job_key_mode!r}"
        )

    if batch and spec.job_key_mode is not None:
        raise InvalidJobError(
            "job_key_mode cannot be set per job in a batch add; "
            "pass preserve_run_at= to the call instead"
        )

    if spec.flags is not None:
        check_texts(spec.flags, "flags")

    return spec


def check_texts(values: object, what: str) -> list[str]:
    """Return ``values`` as a list if it is a list of storable strings.

    :raises InvalidJobError: a bare string, a non-string item, or a NUL.
    """
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidJobError(f"{what} must be a list of strings, not {values!r:.40}")

    return [_storable(value, f"each of {what}") for value in values]


def encode_payload(payload: object, *, identifier: str = "") -> bytes:
    """Encode a payload as JSON that a PostgreSQL ``json`` column accepts.

    :raises InvalidJobError: the payload is not JSON-able, or holds a NUL
        character, which PostgreSQL cannot store in text.
    """
    try:
        encoded = _encoder.encode(payload)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidJobError(
            f"payload{f' of {identifier!r}' if identifier else ''} "
            f"cannot be encoded as JSON: {exc}"
        ) from exc

    if b"\\u0000" in encoded and _NUL_ESCAPE.search(encoded):
        raise InvalidJobError(
            f"payload{f' of {identifier!r}' if identifier else ''} contains a NUL "
            "character (\\u0000), which PostgreSQL cannot store"
        )

    return encoded


def add_job_params(
    identifier: str,
    payload: object,
    spec: JobSpec | None,
    *,
    use_local_time: bool = False,
) -> dict[str, Any]:
    """Build the parameters of the ``add_job`` query.

    :raises InvalidJobError: the identifier, spec or payload is invalid.
    """
    spec = check_spec(spec or DEFAULT_SPEC)
    check_identifier(identifier)
    run_at = spec.run_at
    if run_at is None and use_local_time:
        run_at = datetime.now(UTC)

    return {
        "identifier": identifier,
        "payload": encode_payload(payload, identifier=identifier).decode(),
        "queue_name": spec.queue_name,
        "run_at": run_at,
        "max_attempts": spec.max_attempts,
        "job_key": spec.job_key,
        "priority": spec.priority,
        "flags": list(spec.flags) if spec.flags is not None else None,
        "job_key_mode": spec.job_key_mode or "replace",
    }


class _SpecRow(msgspec.Struct, omit_defaults=True):
    """One element of the JSON array that ``add_jobs`` populates job_spec from."""

    identifier: str
    payload: Any
    queue_name: str | None = None
    run_at: datetime | None = None
    max_attempts: int | None = None
    job_key: str | None = None
    priority: int | None = None
    flags: tuple[str, ...] | list[str] | None = None


def add_jobs_document(
    jobs: Iterable[RawJob], *, use_local_time: bool = False
) -> tuple[bytes, int]:
    """Encode jobs as the one JSON array the ``add_jobs`` query takes.

    PostgreSQL cannot add two jobs with one job key in one statement (an
    ``ON CONFLICT DO UPDATE`` may not touch a row twice), and graphile-worker's
    ``addJobs`` fails on them with that error; here they are refused first.

    :returns: the document and how many jobs it holds.
    :raises InvalidJobError: a job is invalid, or has the job key of an
        earlier one; the message gives its index.
    """
    now = datetime.now(UTC) if use_local_time else None
    rows: list[_SpecRow] = []
    keyed: dict[str, int] = {}
    identifiers: set[str] = set()  # checked already: batches repeat a few
    for index, job in enumerate(jobs):
        try:
            spec = check_spec(job.spec, batch=True)
            if not isinstance(job.identifier, str) or job.identifier not in identifiers:
                identifiers.add(check_identifier(job.identifier))
        except InvalidJobError as exc:
            raise InvalidJobError(f"job {index}: {exc}") from exc

        if spec.job_key is not None:
            first = keyed.setdefault(spec.job_key, index)
            if first != index:
                raise InvalidJobError(
                    f"job {index}: job_key {spec.job_key!r} is also that of job "
                    f"{first}; one call cannot add two jobs with one job key, so "
                    "merge them or add them in separate calls"
                )

        rows.append(
            _SpecRow(
                job.identifier,
                job.payload,
                spec.queue_name,
                spec.run_at if spec.run_at is not None else now,
                spec.max_attempts,
                spec.job_key,
                spec.priority,
                spec.flags,
            )
        )

    try:
        document = encode_payload(rows)
    except InvalidJobError:
        for index, row in enumerate(rows):
            try:
                encode_payload(row.payload, identifier=row.identifier)
            except InvalidJobError as exc:
                raise InvalidJobError(f"job {index}: {exc}") from exc

        raise

    return document, len(rows)


def names_from_specs(
    identifiers: Iterable[str], queue_names: Iterable[str | None]
) -> tuple[str, str | None] | None:
    """The names every added row must carry, when the specs leave no doubt.

    In ``replace`` and ``preserve_run_at`` modes each row takes its spec's task
    and queue, so one identifier and one queue name across all specs name
    every row without asking the database.
    """
    distinct_identifiers = set(identifiers)
    distinct_queues = set(queue_names)
    if len(distinct_identifiers) != 1 or len(distinct_queues) != 1:
        return None

    return distinct_identifiers.pop(), distinct_queues.pop()


def name_ids(rows: Iterable[Sequence[Any]]) -> dict[str, list[int]]:
    """The ``job_names`` query parameters for rows of ``BARE_JOB_COLUMNS``."""
    task_ids: set[int] = set()
    queue_ids: set[int] = set()
    for row in rows:
        task_ids.add(row[3])
        if row[1] is not None:
            queue_ids.add(row[1])

    return {"task_ids": sorted(task_ids), "queue_ids": sorted(queue_ids)}


def split_names(
    rows: Iterable[Sequence[Any]],
) -> tuple[dict[int, str], dict[int, str]]:
    """Split ``job_names`` rows into task names and queue names by id."""
    tasks: dict[int, str] = {}
    queues: dict[int, str] = {}
    for is_task, id_, name in rows:
        (tasks if is_task else queues)[id_] = name

    return tasks, queues


def raw_jobs_of(
    tasks: Iterable[TaskPayload | tuple[TaskPayload, JobSpec]],
    spec: JobSpec | None,
) -> list[RawJob]:
    """Turn typed task payloads (each optionally with its own spec) into raw jobs."""
    jobs: list[RawJob] = []
    for item in tasks:
        task, own_spec = item if isinstance(item, tuple) else (item, None)
        jobs.append(
            RawJob(
                identifier=identifier_of(task),
                payload=task,
                spec=own_spec or spec or DEFAULT_SPEC,
            )
        )

    return jobs


def batch_payload(items: Sequence[object]) -> tuple[str, list[object]]:
    """Check that batch items share one task and return it with the items.

    :raises InvalidJobError: the batch is empty or mixes tasks.
    """
    if not items:
        raise InvalidJobError("a batch job needs at least one item")

    identifiers = {identifier_of(item) for item in items}
    if len(identifiers) > 1:
        raise InvalidJobError(
            f"a batch job's items must share one task, not {sorted(identifiers)}"
        )

    return identifiers.pop(), list(items)


def job_from_row(
    row: Sequence[Any],
    tasks: Mapping[int, str] | None = None,
    queues: Mapping[int, str] | None = None,
) -> Job:
    """Decode a row of ``JOB_COLUMNS`` into a :class:`Job`.

    :param tasks: task names by id, for rows of ``BARE_JOB_COLUMNS``.
    :param queues: queue names by id, likewise.
    """
    queue_id: int | None = row[1]
    return Job(
        id=row[0],
        job_queue_id=queue_id,
        queue_name=(
            queues[queue_id] if queues is not None and queue_id is not None else row[2]
        ),
        task_id=row[3],
        task_identifier=tasks[row[3]] if tasks is not None else row[4],
        payload=msgspec.json.decode(row[5]),
        priority=row[6],
        run_at=row[7],
        attempts=row[8],
        max_attempts=row[9],
        last_error=row[10],
        created_at=row[11],
        updated_at=row[12],
        key=row[13],
        locked_at=row[14],
        locked_by=row[15],
        revision=row[16],
        flags=_decode_flags(row[17]) if row[17] is not None else None,
    )


def check_attempts(attempts: object) -> int:
    """:raises InvalidJobError: ``attempts`` is not a smallint of 0 or more."""
    return _smallint(attempts, "attempts", low=0)


def check_cleanup_tasks(tasks: Iterable[str], known: Sequence[str]) -> set[str]:
    """:raises ConfigurationError: a name that is not a cleanup task."""
    wanted = set(tasks)
    unknown = wanted - set(known)
    if unknown:
        raise ConfigurationError(
            f"unknown cleanup task {sorted(unknown)}; choose from {list(known)}"
        )

    return wanted
