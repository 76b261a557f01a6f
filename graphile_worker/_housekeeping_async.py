"""``AsyncHousekeeper``: a worker's LISTEN connection and its stale-lock sweep.

Both loops run beside the worker until its stopping event is set. The listener
holds a connection of its own, so notifications never wait behind queries, and
reconnects after any loss; the sweeper unlocks jobs and queues whose lock is
over four hours old, first soon after start and then every eight to ten
minutes at random, so that many workers do not sweep in step.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Final, final

import msgspec

from graphile_worker._acompat import AEvent, aevent_wait
from graphile_worker._outcome import backoff
from graphile_worker._sql import queries
from graphile_worker.database_async import AsyncDatabase, Notification
from graphile_worker.errors import DatabaseError
from graphile_worker.events import Events

LISTEN_CHANNELS: Final = ("jobs:insert", "worker:migrate")
LISTEN_SLICE = 0.25  # seconds the listener waits before checking for a stop
SWEEP_FIRST = 5.0  # seconds, the most before the first stale-lock sweep
SWEEP_EVERY = (480.0, 600.0)  # seconds, random bounds between later sweeps
SWEEP_RETRY = 60.0  # seconds, the most before retrying a failed sweep

logger = logging.getLogger("graphile_worker.worker")


@final
class AsyncHousekeeper:
    """The listener and sweeper loops of one worker.

    :param on_insert: called when jobs may have been added.
    :param on_breaking: called with the number of a breaking migration that
        another process applied; the worker must stop.
    """

    def __init__(
        self,
        database: AsyncDatabase,
        schema: str,
        *,
        worker_id: str,
        events: Events,
        stopping: AEvent,
        on_insert: Callable[[], object],
        on_breaking: Callable[[int], object],
    ) -> None:
        self._database = database
        self._schema = schema
        self._sql = queries(schema)
        self.worker_id = worker_id
        self._events = events
        self._stopping = stopping
        self._on_insert = on_insert
        self._on_breaking = on_breaking

    def _on_notification(self, note: Notification) -> None:
        if note.channel == "jobs:insert":
            self._on_insert()
            return

        try:
            details = msgspec.json.decode(note.payload)
        except msgspec.DecodeError:
            return

        if isinstance(details, dict) and details.get("breaking"):
            number = details.get("migrationNumber")
            logger.warning(
                "Schema %s received breaking migration %s; it is unsafe to continue, "
                "so worker %s stops",
                self._schema,
                number,
                self.worker_id,
                extra={"action": "breaking_migration", "worker_id": self.worker_id},
            )
            self._on_breaking(number if isinstance(number, int) else -1)

    async def listen(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            self._events.emit(
                "pool:listen:connecting",
                {"worker_id": self.worker_id, "attempts": failures},
            )
            try:
                async with self._database.listen(LISTEN_CHANNELS) as listener:
                    if failures:
                        logger.info(
                            "Worker %s is listening again",
                            self.worker_id,
                            extra={"action": "listen", "worker_id": self.worker_id},
                        )

                    failures = 0
                    self._events.emit(
                        "pool:listen:success", {"worker_id": self.worker_id}
                    )
                    self._on_insert()
                    while not self._stopping.is_set():
                        for note in await listener.wait(LISTEN_SLICE):
                            self._on_notification(note)

            except DatabaseError as exc:
                failures += 1
                delay = backoff(failures)
                logger.warning(
                    "Worker %s lost its LISTEN connection (%s); reconnecting in %.2fs",
                    self.worker_id,
                    exc,
                    delay,
                    extra={"action": "listen_error", "worker_id": self.worker_id},
                )
                self._events.emit(
                    "pool:listen:error", {"worker_id": self.worker_id, "error": exc}
                )
                await aevent_wait(self._stopping, delay)

        self._events.emit("pool:listen:release", {"worker_id": self.worker_id})

    async def sweep(self) -> None:
        delay = random.uniform(0, SWEEP_FIRST)
        while not await aevent_wait(self._stopping, delay):
            delay = random.uniform(*SWEEP_EVERY)
            self._events.emit("resetLocked:started", {"worker_id": self.worker_id})
            try:
                row = await self._database.fetch_one(self._sql.reset_stale_locks)
            except DatabaseError as exc:
                logger.warning(
                    "Worker %s could not reset stale locks (%s)",
                    self.worker_id,
                    exc,
                    extra={"action": "sweep_error", "worker_id": self.worker_id},
                )
                self._events.emit(
                    "resetLocked:failure", {"worker_id": self.worker_id, "error": exc}
                )
                delay = min(delay, SWEEP_RETRY)
                continue

            jobs, queues = row if row is not None else (0, 0)
            if jobs or queues:
                logger.warning(
                    "Unlocked %d jobs and %d queues locked for over four hours",
                    jobs,
                    queues,
                    extra={"action": "sweep", "worker_id": self.worker_id},
                )

            self._events.emit(
                "resetLocked:success",
                {"worker_id": self.worker_id, "jobs": jobs, "queues": queues},
            )
