"""``AsyncCronScheduler``: adds the jobs of a crontab, once per item and minute.

Exactly once across any number of workers, in any language: each item's job
for a minute is added by the one statement whose upsert moves the item's
``_private_known_crontabs.last_execution`` forward to that minute (the same
protocol graphile-worker uses). On start, items seen for the first time are
registered without backfill, and known ones are backfilled within their
``fill`` window from where they last ran.

Time comes from a clock object, so tests can run a day of schedule at once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, final

from graphile_worker._acompat import AEvent, aevent_wait
from graphile_worker._cronplan import (
    CATCH_UP_LIMIT,
    MINUTE,
    backfill_plan,
    ceil_minute,
    floor_minute,
    restart_delay,
    schedule_document,
)
from graphile_worker._sql import queries
from graphile_worker.cron import CronItem
from graphile_worker.database_async import AsyncDatabase
from graphile_worker.events import Events

logger = logging.getLogger("graphile_worker.cron")


class AsyncClock(Protocol):
    """Where the scheduler gets the time and waits for it."""

    def now(self) -> datetime:
        """The current time, timezone-aware."""
        ...

    async def sleep_until(self, when: datetime, stopping: AEvent) -> bool:
        """Wait until ``when`` or until ``stopping`` is set; say if it was set."""
        ...


@final
class SystemAsyncClock:
    """The machine's clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime, stopping: AEvent) -> bool:
        delay = (when - self.now()).total_seconds()
        return await aevent_wait(stopping, max(delay, 0.0))


@final
class AsyncCronScheduler:
    """Runs beside a worker and adds the jobs its crontab asks for.

    :param database: where the jobs go.
    :param schema: the graphile_worker schema name.
    :param items: the parsed crontab; identifiers must be unique.
    :param stopping: set to end :meth:`run`.
    :param clock: the time source (default: the machine's clock).
    """

    def __init__(
        self,
        database: AsyncDatabase,
        schema: str,
        items: Sequence[CronItem],
        *,
        events: Events,
        worker_id: str,
        stopping: AEvent,
        clock: AsyncClock | None = None,
    ) -> None:
        self._database = database
        self._sql = queries(schema)
        self._items = list(items)
        self._events = events
        self._worker_id = worker_id
        self._stopping = stopping
        self._clock: AsyncClock = clock or SystemAsyncClock()
        self._failures = 0

    async def run(self) -> None:
        """Schedule until stopped; restart after any error, with backoff."""
        if not self._items:
            return

        while not self._stopping.is_set():
            try:
                await self._tick(await self._start())
                return
            except Exception as exc:
                self._failures += 1
                failures = self._failures
                delay = restart_delay(failures)
                logger.error(
                    "Cron hit an error; restarting in %.1fs (attempt %d): %s",
                    delay,
                    failures,
                    exc,
                    exc_info=logger.isEnabledFor(logging.DEBUG),
                    extra={"action": "cron_error", "worker_id": self._worker_id},
                )
                if await aevent_wait(self._stopping, delay):
                    return

    async def _start(self) -> datetime:
        """Register new items and backfill known ones; return the start time."""
        start = self._clock.now()
        self._events.emit(
            "cron:starting", {"worker_id": self._worker_id, "start": start}
        )
        rows = await self._database.fetch(self._sql.cron_known)
        known = {identifier: (since, last) for identifier, since, last in rows}
        unknown = [item.identifier for item in self._items]
        unknown = [identifier for identifier in unknown if identifier not in known]
        if unknown:
            await self._database.execute(
                self._sql.cron_register, {"identifiers": unknown, "now": start}
            )

        for ts, due in backfill_plan(self._items, known, start):
            self._events.emit(
                "cron:backfill",
                {"worker_id": self._worker_id, "timestamp": ts, "items": due},
            )
            await self._schedule(ts, due, backfilled=True)

        self._events.emit(
            "cron:started", {"worker_id": self._worker_id, "start": start}
        )
        return start

    async def _tick(self, start: datetime) -> None:
        """Fire at each minute boundary from ``start`` until stopped."""
        expected = ceil_minute(start)
        while True:
            if await self._clock.sleep_until(expected, self._stopping):
                return

            now = self._clock.now()
            current = floor_minute(now)
            if current < expected:
                self._events.emit(
                    "cron:prematureTimer",
                    {"worker_id": self._worker_id, "expected": expected, "now": now},
                )
                continue

            if current - expected > CATCH_UP_LIMIT:
                # The clock jumped: restart, which backfills only what each
                # item's fill window allows, rather than every missed minute.
                logger.warning(
                    "Cron is %s behind (clock jump or suspended process); "
                    "restarting with backfill",
                    current - expected,
                    extra={"action": "cron_jump", "worker_id": self._worker_id},
                )
                expected = ceil_minute(await self._start())
                continue

            if current > expected:
                self._events.emit(
                    "cron:overdueTimer",
                    {"worker_id": self._worker_id, "expected": expected, "now": now},
                )

            due = [item for item in self._items if item.matches(expected)]
            if due:
                await self._schedule(expected, due, backfilled=False)

            self._failures = 0  # a healthy minute: the next error starts over
            expected += MINUTE

    async def _schedule(
        self, ts: datetime, due: Sequence[CronItem], *, backfilled: bool
    ) -> None:
        details: dict[str, Any] = {
            "worker_id": self._worker_id,
            "timestamp": ts,
            "items": due,
        }
        self._events.emit("cron:schedule", details)
        rows = await self._database.fetch(
            self._sql.cron_schedule,
            {
                "specs": schedule_document(due, ts, backfilled=backfilled).decode(),
                "ts": ts,
            },
        )
        if rows and logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "Cron added %d jobs for %s%s",
                len(rows),
                ts.isoformat(),
                " (backfill)" if backfilled else "",
                extra={"action": "cron_schedule", "worker_id": self._worker_id},
            )

        self._events.emit(
            "cron:scheduled", {**details, "job_ids": [row[1] for row in rows]}
        )

