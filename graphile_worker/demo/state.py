"""What the demo's tasks share: the records they keep and the worker's counts."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from psycopg_pool import ConnectionPool

from graphile_worker.context import WorkerContext
from graphile_worker.context_async import AsyncWorkerContext

Context = WorkerContext | AsyncWorkerContext


class DemoState:
    """What the demo's tasks record and the worker's events count.

    Tasks reach it with ``ctx.get_ext(DemoState)``; every method is thread-safe.

    :param pool: connections for the tasks' own queries.
    """

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool
        self.lock = threading.Lock()
        self.started = threading.Event()
        self.started_at = 0.0
        self.finished_at = 0.0
        self.succeeded: Counter[str] = Counter()
        self.retried: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.to_reschedule: list[int] = []
        self.rescheduled = 0
        self.email_sizes: list[int] = []
        self.active_transfers = 0
        self.most_active_transfers = 0
        self.transfers_done: list[int] = []
        self.report_attempts: dict[str, list[int]] = {}
        self.report_means: dict[str, float] = {}
        self.batch_attempts: list[tuple[int, list[int]]] = []
        self.indexed: Counter[int] = Counter()
        self.index: dict[str, set[int]] = {}

    # Worker events.

    def on_start(self, details: Mapping[str, Any]) -> None:
        """``pool:create``: the worker is ready."""
        self.started_at = time.monotonic()
        self.started.set()

    def on_success(self, details: Mapping[str, Any]) -> None:
        """``job:success``."""
        with self.lock:
            self.succeeded[details["job"].task_identifier] += 1

    def on_error(self, details: Mapping[str, Any]) -> None:
        """``job:error``: a failed attempt; queue a retry for rescheduling."""
        job = details["job"]
        with self.lock:
            if job.attempts < job.max_attempts:
                self.retried[job.task_identifier] += 1
                self.to_reschedule.append(job.id)
            else:
                self.failed[job.task_identifier] += 1

    def take_retries(self) -> list[int]:
        """The ids of failed jobs waiting to be rescheduled, now taken."""
        with self.lock:
            taken, self.to_reschedule = self.to_reschedule, []
            self.rescheduled += len(taken)
            return taken

    def retries(self) -> int:
        """Failed attempts that will be retried, so far."""
        with self.lock:
            return sum(self.retried.values())

    def finished(self) -> Counter[str]:
        """Jobs finished per task: succeeded or failed for good."""
        with self.lock:
            return self.succeeded + self.failed

    # Task records.

    @contextmanager
    def transfer(self, transfer_id: int) -> Iterator[None]:
        """Count transfers in progress, to catch two running at once."""
        with self.lock:
            self.active_transfers += 1
            self.most_active_transfers = max(
                self.most_active_transfers, self.active_transfers
            )
        try:
            yield
        finally:
            with self.lock:
                self.active_transfers -= 1
                self.transfers_done.append(transfer_id)


def state_of(ctx: Context) -> DemoState:
    """The DemoState extension of the worker running ``ctx``'s job.

    :raises RuntimeError: the worker was not given one.
    """
    state = ctx.get_ext(DemoState)
    if state is None:
        raise RuntimeError("the demo tasks need the DemoState extension")

    return state


__all__ = ["Context", "DemoState", "state_of"]
