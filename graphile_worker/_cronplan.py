"""Cron scheduling arithmetic shared by both workers: minutes, backfill, specs.

Pure functions: which minutes to backfill on start, and the JSON document the
``cron_schedule`` query takes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from graphile_worker.cron import CronItem

MINUTE = timedelta(minutes=1)
# Further behind than this, the clock jumped (or the process was suspended):
# restart with backfill instead of adding a job for every missed minute.
CATCH_UP_LIMIT = timedelta(minutes=5)
RESTART_MIN = 0.2  # seconds before the first restart after an error
RESTART_MAX = 60.0  # seconds, the longest wait between restarts
RESTART_FACTOR = 1.5
RESTART_GROWTH_LIMIT = 32  # factors past which the delay is long at its cap

Known = Mapping[str, tuple[datetime, datetime | None]]


def floor_minute(moment: datetime) -> datetime:
    """The start of the minute ``moment`` falls in."""
    return moment.replace(second=0, microsecond=0)


def ceil_minute(moment: datetime) -> datetime:
    """``moment`` if it starts a minute, else the start of the next minute."""
    floored = floor_minute(moment)
    return floored if floored == moment else floored + MINUTE


def restart_delay(failures: int) -> float:
    """Seconds to wait before restart number ``failures``, with jitter."""
    growth = RESTART_FACTOR ** min(failures - 1, RESTART_GROWTH_LIMIT)
    ceiling = min(RESTART_MAX, RESTART_MIN * growth)
    return ceiling * (0.5 + random.random() / 2)


def backfill_plan(
    items: Sequence[CronItem], known: Known, start: datetime
) -> Iterator[tuple[datetime, list[CronItem]]]:
    """Yield each minute before ``start`` that needs backfill, with its items.

    Only items already known (by ``known``: identifier to known_since and
    last_execution) are backfilled, from where they last ran (or were first
    known), and no further back than their own ``fill`` window.
    """
    windows = [
        (item, item.fill, last or since)
        for item in items
        if item.identifier in known
        for since, last in (known[item.identifier],)
        if item.fill > timedelta(0)
    ]
    if not windows:
        return

    ts = ceil_minute(start - max(fill for _, fill, _ in windows))
    while ts < start:
        age = start - ts
        due = [
            item
            for item, fill, not_before in windows
            if fill >= age and ts >= not_before and item.matches(ts)
        ]
        if due:
            yield ts, due

        ts += MINUTE


def cron_timestamp(ts: datetime) -> str:
    """``ts`` as JavaScript's ``toISOString()`` writes it, as Node's payloads do."""
    utc = ts.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


class _Spec(msgspec.Struct, omit_defaults=True):
    index: int
    identifier: str
    task: str
    payload: dict[str, Any]
    queue_name: str | None = None
    max_attempts: int | None = None
    priority: int | None = None
    job_key: str | None = None
    job_key_mode: str | None = None


def schedule_document(
    due: Sequence[CronItem], ts: datetime, *, backfilled: bool
) -> bytes:
    """The JSON array of job specs that ``cron_schedule`` adds for ``ts``."""
    stamp = {"ts": cron_timestamp(ts), "backfilled": backfilled}
    return msgspec.json.encode(
        [
            _Spec(
                index,
                item.identifier,
                item.task,
                {**item.payload, "_cron": stamp},
                item.queue_name,
                item.max_attempts,
                item.priority,
                item.job_key,
                item.job_key_mode,
            )
            for index, item in enumerate(due)
        ]
    )
