"""Observer events with graphile-worker's names, and interceptors that steer jobs.

Observers watch: ``events.on("job:success", callback)``; each callback gets one
dict of details and its return value is ignored. A callback that raises is
logged and never stops the worker.

Interceptors decide, in the Rust crate's manner: ``before_job_run`` may skip or
fail a job before its handler runs, ``after_job_run`` may change its outcome,
and ``before_job_schedule`` may rewrite or drop a job that a worker adds.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, final

import msgspec

from graphile_worker.errors import ConfigurationError

EVENT_NAMES: Final = frozenset(
    {
        "pool:create",
        "pool:listen:connecting",
        "pool:listen:success",
        "pool:listen:error",
        "pool:listen:notification",
        "pool:listen:release",
        "pool:gracefulShutdown",
        "pool:gracefulShutdown:complete",
        "pool:gracefulShutdown:error",
        "pool:forcefulShutdown",
        "pool:forcefulShutdown:complete",
        "pool:forcefulShutdown:error",
        "pool:fatalError",
        "pool:release",
        "worker:create",
        "worker:getJob:start",
        "worker:getJob:empty",
        "worker:getJob:error",
        "worker:fatalError",
        "worker:release",
        "worker:stop",
        "job:start",
        "job:success",
        "job:error",
        "job:failed",
        "job:complete",
        "cron:starting",
        "cron:started",
        "cron:schedule",
        "cron:scheduled",
        "cron:backfill",
        "cron:overdueTimer",
        "cron:prematureTimer",
        "resetLocked:started",
        "resetLocked:success",
        "resetLocked:failure",
        "gracefulShutdown",
        "forcefulShutdown",
        "stop",
    }
)

Listener = Callable[[Mapping[str, Any]], object]

logger = logging.getLogger(__name__)


@final
class Events:
    """A registry of observer callbacks by event name."""

    __slots__ = ("_listeners",)

    def __init__(self) -> None:
        self._listeners: defaultdict[str, list[Listener]] = defaultdict(list)

    def on(self, name: str, callback: Listener) -> Listener:
        """Call ``callback`` with the event's details each time ``name`` fires.

        :raises ConfigurationError: ``name`` is not an event graphile_worker emits.
        """
        if name not in EVENT_NAMES:
            raise ConfigurationError(
                f"unknown event {name!r}; see graphile_worker.events.EVENT_NAMES"
            )

        self._listeners[name].append(callback)
        return callback

    def off(self, name: str, callback: Listener) -> None:
        """Stop calling ``callback`` for ``name``; unknown pairs are ignored."""
        if callback in self._listeners.get(name, ()):
            self._listeners[name].remove(callback)

    def wants(self, name: str) -> bool:
        """Whether anyone listens to ``name`` (to skip building its details)."""
        return bool(self._listeners.get(name))

    def emit(self, name: str, details: Mapping[str, Any]) -> None:
        """Call each listener of ``name``; log, and swallow, what they raise."""
        for callback in tuple(self._listeners.get(name, ())):
            try:
                callback(details)
            except Exception:
                logger.exception(
                    "Listener %r of event %s raised",
                    callback,
                    name,
                    extra={"action": "event_listener_error", "event": name},
                )


@final
class Skip(msgspec.Struct, frozen=True):
    """Interceptor verdict: complete the job without running its handler."""


@final
class Fail(msgspec.Struct, frozen=True):
    """Interceptor verdict: fail this attempt with ``message`` (it may retry)."""

    message: str


Verdict = Skip | Fail | None
Outcome = Literal["success", "failure"]


@final
class JobResult(msgspec.Struct, frozen=True):
    """What a job's attempt came to, as ``after_job_run`` sees and may change it.

    :ivar error: the exception of a failure, ``None`` on success.
    :ivar replacement_payload: for a batch, the items to retry.
    """

    error: BaseException | None = None
    replacement_payload: Any = None

    @property
    def outcome(self) -> Outcome:
        """``"success"`` or ``"failure"``."""
        return "success" if self.error is None else "failure"
