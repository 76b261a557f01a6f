"""How many jobs a worker claims ahead of its free runners (its local queue).

Claiming costs a round trip and a server-side scan whatever the batch size, so
for short jobs one claim should serve many of them; for long jobs, jobs claimed
ahead would sit locked to one worker while others could run them. The
``auto`` size steers between the two: it keeps about ``WINDOW`` seconds of
work claimed ahead, estimated from how long recent jobs ran, so short jobs are
claimed in batches and long ones one per free runner, like graphile-worker's
default.
"""

from __future__ import annotations

from typing import Literal, final

WINDOW = 0.02  # seconds of work the auto size keeps claimed ahead
AUTO_MAX = 500  # jobs the auto size claims ahead at most
AUTO_TTL = 1.0  # seconds a job the auto size claimed ahead may wait for a runner
SMOOTHING = 0.05  # weight of the newest run time in the moving average

LocalQueueSize = int | Literal["auto"]


@final
class ClaimAhead:
    """The local queue's target size, fixed or adapting to job run times.

    :param size: a fixed number of jobs (0: claim only for free runners) or
        ``"auto"``.
    :param concurrency: the worker's runners.
    :param ttl: seconds a claimed-ahead job may wait before it is given back;
        the auto size caps it at ``AUTO_TTL``.
    """

    __slots__ = ("_concurrency", "_fixed", "_mean", "enabled", "ttl")

    def __init__(self, size: LocalQueueSize, *, concurrency: int, ttl: float) -> None:
        self._fixed = None if size == "auto" else int(size)
        self._concurrency = concurrency
        self._mean: float | None = None
        self.enabled = self._fixed != 0
        self.ttl = ttl if self._fixed is not None else min(ttl, AUTO_TTL)

    def observe(self, seconds: float) -> None:
        """Fold one job's run time into the moving average.

        Called from runner threads in the threaded worker without a lock: a
        lost update only delays the average a little.
        """
        mean = self._mean
        self._mean = seconds if mean is None else mean + (seconds - mean) * SMOOTHING

    def size(self) -> int:
        """How many jobs to hold claimed beyond the runners, right now."""
        if self._fixed is not None:
            return self._fixed

        mean = self._mean
        if mean is None:
            return 0  # nothing has run yet: claim only for free runners

        if mean * AUTO_MAX <= self._concurrency * WINDOW:
            return AUTO_MAX

        return int(self._concurrency * WINDOW / mean)

