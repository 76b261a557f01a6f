"""Profile one AsyncWorker (or threaded Worker) drain; not run by ``nox -s bench``.

Counts the worker's database round trips by statement (claims and their rows,
completion writes and their ids) and optionally runs under cProfile::

    python benchmarks/_profile_drain.py --jobs 100000 --concurrency 10
    python benchmarks/_profile_drain.py --jobs 100000 --concurrency 500 --cprofile
    py-spy record -o /tmp/drain.svg -- python benchmarks/_profile_drain.py --jobs 200000

``--wait-for-spy`` prints the pid and sleeps 2 s after adding the jobs, so
``py-spy record --pid`` can attach before the drain starts.
"""

from __future__ import annotations

import asyncio
import collections
import cProfile
import gc
import io
import os
import pstats
import resource
import time
from typing import Any

import _common
import msgspec

from graphile_worker import AsyncWorker, AsyncWorkerContext, Worker, WorkerOptions, task
from graphile_worker._sql import queries


class Numbered(msgspec.Struct):
    n: int


def count_round_trips(
    database: Any, calls: collections.Counter[str], rows: collections.Counter[str]
) -> None:
    """Wrap a database's execute/fetch to count statements and rows by name."""
    names = {text: name for name, text in msgspec.structs.asdict(queries()).items()}
    fetch, execute = database.fetch, database.execute

    def measure(query: str, params: Any) -> str:
        name = names.get(query, "other")
        calls[name] += 1
        if name == "complete_claimed":
            rows[name] += len(params["ids"])
        return name

    if asyncio.iscoroutinefunction(fetch):

        async def afetch(query: str, params: Any = None) -> Any:
            name = measure(query, params)
            result = await fetch(query, params)
            rows[name] += len(result) if name != "complete_claimed" else 0
            return result

        async def aexecute(query: str, params: Any = None) -> Any:
            measure(query, params)
            return await execute(query, params)

        database.fetch, database.execute = afetch, aexecute
    else:

        def sfetch(query: str, params: Any = None) -> Any:
            name = measure(query, params)
            result = fetch(query, params)
            rows[name] += len(result) if name != "complete_claimed" else 0
            return result

        def sexecute(query: str, params: Any = None) -> Any:
            measure(query, params)
            return execute(query, params)

        database.fetch, database.execute = sfetch, sexecute


class GcTimer:
    """Count the collections of each generation and the time they take."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0
        self.on = False

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if not self.on:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = info["generation"]
            self.count[generation] += 1
            self.seconds[generation] += time.perf_counter() - self._started


def _local_queue(text: str) -> int | str:
    return text if text == "auto" else int(text)


def main() -> None:
    args = _common.parse_args(
        "Profile one drain of N no-op jobs.",
        default_jobs=100_000,
        quick_jobs=20_000,
        extra=[
            (["--concurrency"], {"type": int, "default": 10}),
            (["--complete-delay"], {"type": float, "default": 0.0}),
            (["--local-queue"], {"type": _local_queue, "default": "auto"}),
            (["--threaded"], {"action": "store_true"}),
            (["--cprofile"], {"action": "store_true"}),
            (["--wait-for-spy"], {"action": "store_true"}),
        ],
    )
    extra = args.extra
    calls: collections.Counter[str] = collections.Counter()
    rows: collections.Counter[str] = collections.Counter()
    with (
        _common.server(args) as server_dsn,
        _common.fresh_database(server_dsn, "profile") as dsn,
    ):
        _common.migrate(dsn)
        for start in range(0, args.jobs, 50_000):
            _common.add_jobs(dsn, "noop", min(50_000, args.jobs - start), start=start)
        _common.analyze(dsn)
        options = WorkerOptions(
            dsn=dsn,
            concurrency=extra.concurrency,
            complete_delay=extra.complete_delay,
            local_queue_size=extra.local_queue,
            handle_signals=False,
        )
        if extra.threaded:

            @task("noop")
            def noop_sync(payload: Numbered, ctx: Any) -> None:
                pass

            options.define_job(noop_sync)
        else:

            @task("noop")
            async def noop(payload: Numbered, ctx: AsyncWorkerContext) -> None:
                pass

            options.define_job(noop)

        if extra.wait_for_spy:
            print(f"pid {os.getpid()}", flush=True)
            time.sleep(2)

        profiler = cProfile.Profile() if extra.cprofile else None
        gc_timer = GcTimer()
        gc.callbacks.append(gc_timer)
        gc_timer.on = True
        usage = resource.getrusage(resource.RUSAGE_SELF)
        began = time.perf_counter()
        if extra.threaded:
            with Worker(options) as worker:
                count_round_trips(worker.database, calls, rows)
                if profiler:
                    profiler.enable()
                worker.run_once()
        else:

            async def drain() -> None:
                async with AsyncWorker(options) as worker:
                    count_round_trips(worker.database, calls, rows)
                    if profiler:
                        profiler.enable()
                    await worker.run_once()

            asyncio.run(drain())
        seconds = time.perf_counter() - began
        gc_timer.on = False
        after = resource.getrusage(resource.RUSAGE_SELF)
        if profiler:
            profiler.disable()
        left = _common.jobs_left(dsn)

    kind = "threaded" if extra.threaded else "async"
    print(
        f"{kind} concurrency {extra.concurrency} local queue {extra.local_queue} "
        f"delay {extra.complete_delay}: "
        f"{args.jobs} jobs in {seconds:.2f}s = {args.jobs / seconds:,.0f} jobs/s "
        f"(start-up included), {left} left"
    )
    per_job = 1e6 / args.jobs
    print(
        f"  process: user {per_job * (after.ru_utime - usage.ru_utime):.1f} us/job, "
        f"sys {per_job * (after.ru_stime - usage.ru_stime):.1f} us/job, "
        f"{(after.ru_nvcsw - usage.ru_nvcsw) / args.jobs:.2f} voluntary and "
        f"{(after.ru_nivcsw - usage.ru_nivcsw) / args.jobs:.2f} involuntary "
        "context switches/job"
    )
    print(
        "  gc: "
        + ", ".join(
            f"gen{g} {gc_timer.count[g]} x = {1000 * gc_timer.seconds[g]:.0f} ms"
            for g in range(3)
        )
        + f" ({100 * sum(gc_timer.seconds) / seconds:.1f}% of the drain)"
    )
    for name in sorted(calls):
        average = rows[name] / calls[name]
        print(
            f"  {name:<18} {calls[name]:>8} calls  {rows[name]:>9} rows  "
            f"{average:8.1f} rows/call"
        )
    if profiler:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(40)
        print(out.getvalue())


if __name__ == "__main__":
    main()
