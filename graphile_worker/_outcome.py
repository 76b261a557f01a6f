"""What happens to a finished attempt, shared by both workers.

The worker records each outcome as a :class:`Done`; the completer writes them
in groups, then :func:`report` logs and emits each one, only once written.
"""

from __future__ import annotations

import logging
import random
import time
import traceback
from typing import Any, final

import msgspec

from graphile_worker import _jobspec
from graphile_worker.database_async import Row
from graphile_worker.events import Events
from graphile_worker.task import TaskHandler

RETRY_MIN = 0.05  # seconds before the first retry of a failed database call
RETRY_MAX = 1.0  # seconds, the longest wait between database retries
MAX_ERROR_LENGTH = 10_000  # characters of a failure message kept in last_error

logger = logging.getLogger("graphile_worker.worker")


class Failure(msgspec.Struct, omit_defaults=True):
    """One element of the ``fail_claimed`` JSON document."""

    id: int
    message: str
    payload: msgspec.Raw | None = None


@final
class Done(msgspec.Struct):
    """A finished attempt waiting for the completer to write it."""

    row: Row
    handler: TaskHandler
    error: BaseException | None
    replacement: bytes | None
    started: float


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt``: doubling, capped, jittered."""
    ceiling: float = min(RETRY_MAX, RETRY_MIN * 2.0**attempt)
    return ceiling * (0.5 + random.random() / 2)


def message_of(error: BaseException, *, with_traceback: bool = False) -> str:
    """The text recorded for a failure: storable, bounded, never raising.

    A ``__str__`` that raises falls back to the class name; a NUL or an
    unpaired surrogate, which PostgreSQL text cannot hold, is escaped; and a
    huge message is cut to ``MAX_ERROR_LENGTH`` characters.
    """
    try:
        if with_traceback:
            text = "".join(traceback.format_exception(error)).rstrip()
        else:
            text = str(error)
    except Exception:
        text = ""

    text = text or type(error).__name__
    if len(text) > MAX_ERROR_LENGTH:
        text = text[:MAX_ERROR_LENGTH] + " [truncated]"

    text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def report(
batch: list[Done], failed_rows: list[Row], *, events: Events, worker_id: str
) -> None:
    """Log and emit each outcome, now that it is safely written."""
    attempts_by_id = {row[0]: (row[1], row[2], row[3]) for row in failed_rows}
    debug = logger.isEnabledFor(logging.DEBUG)
    # Successes cost nothing here unless someone logs or listens for them.
    quiet = not (
        debug or events.wants("job:success") or events.wants("job:complete")
    )
    for done in batch:
        row, error = done.row, done.error
        if error is None and quiet:
            continue

        identifier = done.handler.identifier
        elapsed_ms = (time.monotonic() - done.started) * 1000
        if error is None:
            if debug:
                logger.debug(
                    "Completed task %s job %d in %.1fms",
                    identifier,
                    row[0],
                    elapsed_ms,
                    extra={
                        "action": "job_success",
                        "job_id": row[0],
                        "task": identifier,
                        "worker_id": worker_id,
                    },
                )

            _emit(events, worker_id, "job:success", done, None)
            _emit(events, worker_id, "job:complete", done, None)
            continue

        attempts, max_attempts, run_at = attempts_by_id.get(
            row[0], (row[8], row[9], None)
        )
        permanent = attempts >= max_attempts
        extra = {
            "action": "job_failed" if permanent else "job_retry",
            "job_id": row[0],
            "task": identifier,
            "attempts": attempts,
            "worker_id": worker_id,
        }
        if permanent:
            logger.error(
                "Task %s job %d failed permanently after %d attempts: %s",
                identifier,
                row[0],
                attempts,
                message_of(error),
                exc_info=error,
                extra=extra,
            )
        else:
            logger.warning(
                "Task %s job %d failed (attempt %d of %d), retrying at %s: %s",
                identifier,
                row[0],
                attempts,
                max_attempts,
                run_at,
                message_of(error),
                extra=extra,
            )
            logger.debug("Traceback of job %d", row[0], exc_info=error)

        _emit(events, worker_id, "job:error", done, error)
        if permanent:
            _emit(events, worker_id, "job:failed", done, error)

        _emit(events, worker_id, "job:complete", done, error)

def _emit(
events: Events, worker_id: str, name: str, done: Done, error: BaseException | None
) -> None:
    if events.wants(name):
        job = _jobspec.job_from_row(done.row, {done.row[3]: done.handler.identifier})
        events.emit(
            name, {"worker_id": worker_id, "job": job, "error": error}
        )


def batch_error(failed: int, total: int, errors: list[BaseException]) -> Exception:
    shown = "; ".join(message_of(error) for error in errors[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return RuntimeError(f"{failed} of {total} batch items failed: {shown}{more}")


def replacement_bytes(payload: Any, fallback: bytes | None) -> bytes | None:
    if payload is None:
        return fallback

    if isinstance(payload, bytes):
        return payload

    return msgspec.json.encode(payload)
