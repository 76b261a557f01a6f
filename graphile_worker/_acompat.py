"""Pairs of async and blocking primitives that the generated sync code swaps in.

An async module uses the ``A``-prefixed name; ``tools/async_to_sync.py`` renames
it to the blocking twin in the sync module:

========================  ==========================
async                     blocking
========================  ==========================
``AEvent``, ``ALock``     ``Event``, ``Lock`` (threading)
``asleep``                ``sleep``
``AQueue``                ``Queue`` (unbounded FIFO)
``AWakeup``               ``Wakeup`` (a resettable signal)
``ATaskGroup``            ``TaskGroup`` (threads joined on exit)
``arun_blocking``         ``run_blocking``
``ACancelScope``          ``CancelScope`` (cannot cancel a thread)
``aevent_wait``           ``event_wait``
========================  ==========================
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar, final

import anyio.to_thread

T = TypeVar("T")

AEvent = asyncio.Event
ALock = asyncio.Lock
Event = threading.Event
Lock = threading.Lock

asleep = asyncio.sleep
sleep = time.sleep


class AQueue(asyncio.Queue[T]):
    """An unbounded FIFO for the tasks of one event loop."""

    def get_nowait(self) -> T:
        """:raises queue.Empty: nothing is waiting (as the thread queue says)."""
        try:
            return super().get_nowait()
        except asyncio.QueueEmpty:
            raise queue.Empty from None

    def close(self) -> None:
        """Nothing to release: an asyncio queue holds no resources."""


class Queue(queue.Queue[T]):
    """An unbounded FIFO for threads."""

    def close(self) -> None:
        """Nothing to release: a thread queue holds no resources."""


async def aevent_wait(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait for ``event`` at most ``seconds``; say whether it is set."""
    if not event.is_set():
        try:
            async with asyncio.timeout(seconds):
                await event.wait()
        except TimeoutError:
            pass

    return event.is_set()


def event_wait(event: threading.Event, seconds: float | None) -> bool:
    """Wait for ``event`` at most ``seconds``; say whether it is set."""
    return event.wait(seconds)


@final
class AWakeup:
    """A signal that can be raised any number of times and waited on again."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, seconds: float | None = None) -> bool:
        """Wait until raised or ``seconds`` pass; lower it again; say which."""
        raised = await aevent_wait(self._event, seconds)
        if raised:
            self._event.clear()

        return raised


@final
class Wakeup:
    """A signal that can be raised any number of times and waited on again."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float | None = None) -> bool:
        """Wait until raised or ``seconds`` pass; lower it again; say which."""
        raised = self._event.wait(seconds)
        if raised:
            self._event.clear()

        return raised


@final
class ATaskGroup:
    """Tasks started together and awaited when the block ends.

    Built on asyncio tasks (which psycopg's async driver requires anyway)
    rather than an anyio task group, so that :meth:`abandon` can leave behind
    a task that shields itself from cancellation. An error in the block
    cancels the tasks; the first error a task raises is re-raised on exit.
    """

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[Any]] = []
        self._abandoned = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if exc is not None:
            for task in self._tasks:
                task.cancel()

        waiting = [task for task in self._tasks if not self._abandoned or task.done()]
        results = await asyncio.gather(*waiting, return_exceptions=True)
        errors = [
            result
            for result in results
            if isinstance(result, BaseException)
            and not isinstance(result, asyncio.CancelledError)
        ]
        if exc is None and errors:
            raise errors[0]

        return None

    def start_soon(
        self, function: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: str
    ) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(function(*args), name=name))

    def abandon(self) -> None:
        """Let the block end without awaiting tasks that are still running."""
        self._abandoned = True


@final
class TaskGroup:
    """Threads started together and joined when the block ends.

    The first exception a thread raises is re-raised from the block's exit.
    """

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._abandoned = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if not self._abandoned:
            for thread in self._threads:
                thread.join()

        if exc is None and self._errors:
            raise self._errors[0]

        return None

    def start_soon(self, function: Callable[..., Any], *args: Any, name: str) -> None:
        def target() -> None:
            try:
                function(*args)
            except BaseException as exc:
                self._errors.append(exc)

        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def abandon(self) -> None:
        """Let the block end without joining its threads.

        For threads that ignore every request to stop; they are daemon
        threads, so they die with the process.
        """
        self._abandoned = True


@final
class ACancelScope:
    """Cancels the task that entered it, and absorbs that one cancellation.

    A lighter stand-in for anyio's scope, made for one job at a time.
    """

    __slots__ = ("_requested", "_task", "cancelled_caught")

    def __init__(self) -> None:
        self._task: asyncio.Task[Any] | None = None
        self._requested = False
        self.cancelled_caught = False

    def __enter__(self) -> Self:
        self._task = asyncio.current_task()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._task = None
        if self._requested and isinstance(exc, asyncio.CancelledError):
            task = asyncio.current_task()
            if task is not None and task.uncancel() == 0:
                self.cancelled_caught = True
                return True

        return False

    def cancel(self) -> None:
        """Cancel the block's task if it is still inside the block."""
        if self._task is not None and not self._requested:
            self._requested = True
            self._task.cancel()


@final
class CancelScope:
    """A stand-in for anyio's scope: a running thread cannot be cancelled."""

    cancelled_caught = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def cancel(self) -> None:
        """Do nothing: threads stop only when their code checks the abort signal."""


async def arun_blocking(function: Callable[..., T], *args: Any) -> T:
    """Run a blocking callable in a worker thread, keeping the loop free."""
    return await anyio.to_thread.run_sync(function, *args, abandon_on_cancel=True)


def run_blocking(function: Callable[..., T], *args: Any) -> T:
    """Run a blocking callable here: the caller is already a thread of its own."""
    return function(*args)


__all__ = [
    "ACancelScope",
    "AEvent",
    "ALock",
    "AQueue",
    "ATaskGroup",
    "AWakeup",
    "CancelScope",
    "Event",
    "Lock",
    "Queue",
    "TaskGroup",
    "Wakeup",
    "aevent_wait",
    "arun_blocking",
    "asleep",
    "event_wait",
    "run_blocking",
    "sleep",
]
