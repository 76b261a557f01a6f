"""Task definitions for the benchmark worker processes (``--tasks _tasks:NAME``).

Run with ``benchmarks/`` as the working directory, e.g.::

    python -m graphile_worker -c DSN --tasks _tasks:latency_async

``BENCH_OUT`` names the file the tasks append their measurements to, one line
each; ``BENCH_SAMPLE_EVERY`` is how many jobs the memory tasks run between two
RSS samples.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import IO, Any

import msgspec

from graphile_worker import task

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SAMPLE_EVERY = int(os.environ.get("BENCH_SAMPLE_EVERY", "50000"))


class Numbered(msgspec.Struct):
    """The payload of every benchmark job: ``{"n": i}``."""

    n: int


_out: IO[str] | None = None
_count = itertools.count(1)  # next() on it is atomic under the GIL


def _write(line: str) -> None:
    global _out
    if _out is None:
        _out = open(os.environ["BENCH_OUT"], "a", buffering=1)  # noqa: SIM115

    _out.write(line)


def rss_kb() -> int:
    """This process's resident set size in KiB, from /proc/self/statm."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE // 1024


def _record_start(payload: Numbered) -> None:
    started_ms = time.time() * 1000
    _write(f"{payload.n} {started_ms:.3f}\n")


def _count_job() -> None:
    done = next(_count)
    if done % SAMPLE_EVERY == 0:
        _write(f"{done} {rss_kb()} {time.time():.3f}\n")


@task("latency")
async def latency_async(payload: Numbered, ctx: Any) -> None:
    """Record the wall-clock start time of job ``n`` (AsyncWorker)."""
    _record_start(payload)


@task("latency")
def latency_sync(payload: Numbered, ctx: Any) -> None:
    """Record the wall-clock start time of job ``n`` (threaded Worker)."""
    _record_start(payload)


@task("noop")
async def noop_async(payload: Numbered, ctx: Any) -> None:
    """Do nothing (AsyncWorker)."""


@task("noop")
async def memory_async(payload: Numbered, ctx: Any) -> None:
    """Count the job; every ``SAMPLE_EVERY`` jobs, record the RSS (AsyncWorker)."""
    _count_job()


@task("noop")
def memory_sync(payload: Numbered, ctx: Any) -> None:
    """Count the job; every ``SAMPLE_EVERY`` jobs, record the RSS (threaded Worker)."""
    _count_job()
