"""Drain throughput: how fast a queue of no-op jobs empties.

Every run gets a fresh database holding the same N jobs ``noop {"n": i}``,
added in one ``add_raw_jobs`` and analysed before the clock starts. The clock
runs from the first job's start to the end of the drain (the run-once call
returning, so the last completions are written), in every variant, so worker
start-up (connecting, the schema check) is left out on both sides.

Variants:

- ``node default``: graphile-worker 0.18 ``runOnce`` with ``concurrency: 10``
  (the CLI's and our default; the library's own default is 1);
- ``node batched``: the batching preset of its performance docs —
  ``localQueue: {size: 500}``, ``completeJobBatchDelay: 0``,
  ``failJobBatchDelay: 0`` — at ``concurrentJobs`` 50/100/200 (the local queue
  is larger than the concurrency, as its docs advise), ``maxPoolSize`` left at
  10 since batching keeps few connections busy;
- ``async default`` / ``async sweep``: AsyncWorker.run_once with defaults
  (concurrency 10, the ``auto`` local queue), then no local queue (claiming
  only for free runners, as Node's default does) at ``concurrency`` x
  ``complete_delay``, the auto local queue at higher concurrency, and fixed
  ``local_queue_size`` 500 and 1000 (like Node's localQueue);
- ``threaded default`` / ``threaded sweep``: the same for the threaded Worker;
- ``2 processes``: two processes (``--processes``), each an AsyncWorker with
  the best async configuration, started together behind a barrier;
- ``sql limit K``: the worker's own ``claim_jobs`` and ``complete_claimed``
  statements with no worker around them: one connection claims K at a time and
  decodes each payload with msgspec, another deletes the finished ids in group
  commits (whatever finished while the previous delete ran). K = 10 is the
  batch concurrency 10 claims without a local queue; the best K is the "sql limit" the
  ratios use. It is the limit of one claiming connection: several worker
  processes claim in parallel and can beat it.

Each configuration runs ``--repeat`` times (3 by default, 1 with ``--quick``),
round-robin across configurations so that noise spreads evenly; the table shows
the median and the ratio of medians.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import secrets
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier
from typing import Any, Literal

import _common
import msgspec
from psycopg import AsyncConnection

from graphile_worker import (
    AsyncWorker,
    AsyncWorkerContext,
    Worker,
    WorkerContext,
    WorkerOptions,
    task,
)
from graphile_worker._sql import queries

IDENTIFIER = "noop"
NODE_DEFAULT_CONCURRENCY = 10
NODE_LOCAL_QUEUE = 500


class Numbered(msgspec.Struct):
    """The payload of every job."""

    n: int


@dataclass
class Clock:
    """First job start and the count of jobs run, filled in by the task."""

    first: float | None = None
    first_cpu: float = 0.0
    count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def tick(self) -> None:
        with self.lock:  # the threaded worker's tasks tick from many threads
            if self.first is None:
                self.first = time.perf_counter()
                self.first_cpu = time.process_time()
            self.count += 1

    def run(self, end: float) -> Run:
        assert self.first is not None, "no job ran"
        return Run(end - self.first, self.count, time.process_time() - self.first_cpu)


@dataclass(frozen=True)
class Run:
    """One timed drain."""

    seconds: float
    count: int
    cpu: float  # seconds of CPU the worker process(es) used meanwhile


@dataclass
class Variant:
    """A configuration to time, with its repeated results."""

    group: str
    config: str
    run: Callable[[str, int], Run]
    ours: Config | None = None
    runs: list[Run] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(run.seconds for run in self.runs)

    @property
    def fastest(self) -> float:
        return min(run.seconds for run in self.runs)

    @property
    def cpu_per_job(self) -> float:
        """Median CPU microseconds the worker process(es) spent per job."""
        return statistics.median(1e6 * run.cpu / run.count for run in self.runs)


# -- ours, in process ----------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One configuration of our workers."""

    concurrency: int
    complete_delay: float = 0.0
    local_queue: int | Literal["auto"] = "auto"

    def __str__(self) -> str:
        ahead = f"local queue {self.local_queue or 'off'}"
        delay = f"{self.complete_delay * 1000:g}ms"
        return f"concurrency {self.concurrency}, {ahead}, delay {delay}"

    def options(self, dsn: str, handler: object) -> WorkerOptions:
        return WorkerOptions(
            dsn=dsn,
            tasks=[handler],
            concurrency=self.concurrency,
            complete_delay=self.complete_delay,
            local_queue_size=self.local_queue,
            handle_signals=False,
        )


DEFAULTS = Config(10)


def async_worker(config: Config) -> Callable[[str, int], Run]:
    def run(dsn: str, jobs: int) -> Run:
        clock = Clock()

        @task(IDENTIFIER)
        async def noop(payload: Numbered, ctx: AsyncWorkerContext) -> None:
            clock.tick()

        async def drain() -> float:
            options = config.options(dsn, noop)
            async with AsyncWorker(options) as worker:
                await worker.run_once()
                return time.perf_counter()

        return clock.run(asyncio.run(drain()))

    return run


def threaded_worker(config: Config) -> Callable[[str, int], Run]:
    def run(dsn: str, jobs: int) -> Run:
        clock = Clock()

        @task(IDENTIFIER)
        def noop(payload: Numbered, ctx: WorkerContext) -> None:
            clock.tick()

        with Worker(config.options(dsn, noop)) as worker:
            worker.run_once()
            return clock.run(time.perf_counter())

    return run


# -- ours, several processes ---------------------------------------------------


def _child(dsn: str, config: Config, barrier: Barrier, out: Any) -> None:
    first: list[float] = []
    count = [0]

    @task(IDENTIFIER)
    async def noop(payload: Numbered, ctx: AsyncWorkerContext) -> None:
        if not first:
            first.extend((time.time(), time.process_time()))
        count[0] += 1

    async def drain() -> float:
        async with AsyncWorker(config.options(dsn, noop)) as worker:
            barrier.wait()
            await worker.run_once()
            return time.time()

    end = asyncio.run(drain())
    cpu = time.process_time() - first[1] if first else 0.0
    out.put((first[0] if first else end, end, count[0], cpu))


def processes(count: int, config: Config) -> Callable[[str, int], Run]:
    def run(dsn: str, jobs: int) -> Run:
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(count)
        out = context.Queue()
        children = [
            context.Process(target=_child, args=(dsn, config, barrier, out))
            for _ in range(count)
        ]
        for child in children:
            child.start()

        results = [out.get(timeout=600) for _ in children]
        for child in children:
            child.join()
            assert child.exitcode == 0, f"worker process exited {child.exitcode}"

        first = min(result[0] for result in results)
        end = max(result[1] for result in results)
        return Run(
            end - first,
            sum(result[2] for result in results),
            sum(result[3] for result in results),
        )

    return run


# -- the SQL limit -------------------------------------------------------------


def sql_limit(batch: int) -> Callable[[str, int], Run]:
    def run(dsn: str, jobs: int) -> Run:
        return asyncio.run(_sql_drain(dsn, batch))

    return run


async def _sql_drain(dsn: str, batch: int) -> Run:
    sql = queries()
    pool_id = f"pool-{secrets.token_hex(9)}"
    decoder = msgspec.json.Decoder(Numbered)
    claimer = await AsyncConnection.connect(dsn, autocommit=True)
    completer = await AsyncConnection.connect(dsn, autocommit=True)
    finished: list[int] = []
    wake = asyncio.Event()
    claiming = True

    async def complete() -> None:
        nonlocal finished
        while True:
            if not finished:
                if not claiming:
                    return
                await wake.wait()
                wake.clear()
                continue

            ids, finished = finished, []
            await completer.execute(
                sql.complete_claimed, {"ids": ids, "pool_id": pool_id}
            )

    try:
        cursor = await claimer.execute(sql.task_ids, {"identifiers": [IDENTIFIER]})
        task_ids = [row[0] for row in await cursor.fetchall()]
        writer = asyncio.create_task(complete())
        count = 0
        began = time.perf_counter()
        began_cpu = time.process_time()
        while True:
            cursor = await claimer.execute(
                sql.claim_jobs,
                {
                    "pool_id": pool_id,
                    "task_ids": task_ids,
                    "forbidden_flags": None,
                    "limit": batch,
                },
            )
            rows = await cursor.fetchall()
            if not rows:
                break

            for row in rows:
                decoder.decode(row[5])
                finished.append(row[0])

            count += len(rows)
            wake.set()

        claiming = False
        wake.set()
        await writer
        return Run(time.perf_counter() - began, count, time.process_time() - began_cpu)
    finally:
        await claimer.close()
        await completer.close()


# -- Node ----------------------------------------------------------------------

NODE_DRAIN = """
let first = null, firstCpu = null, count = 0;
const cpuSeconds = () => {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
};
const taskList = {
  noop: async () => {
    if (first === null) { first = performance.now(); firstCpu = cpuSeconds(); }
    count++;
  },
};
const options = JSON.parse(process.env.GW_OPTIONS);
await gw.runOnce({
  connectionString: process.env.DATABASE_URL,
  taskList,
  logger: quietLogger,
  noHandleSignals: true,
  ...options,
});
const end = performance.now();
emit({ seconds: (end - first) / 1000, count, cpu: cpuSeconds() - firstCpu });
"""


def node(options: dict[str, Any]) -> Callable[[str, int], Run]:
    def run(dsn: str, jobs: int) -> Run:
        result = _common.run_node(NODE_DRAIN, dsn, GW_OPTIONS=json.dumps(options))
        return Run(float(result["seconds"]), int(result["count"]), float(result["cpu"]))

    return run


def node_batched(concurrency: int) -> dict[str, Any]:
    return {
        "preset": {
            "worker": {
                "concurrentJobs": concurrency,
                "localQueue": {"size": NODE_LOCAL_QUEUE},
                "completeJobBatchDelay": 0,
                "failJobBatchDelay": 0,
            }
        }
    }


# -- the benchmark -------------------------------------------------------------


def time_variant(server_dsn: str, variant: Variant, jobs: int) -> None:
    label = "drain_" + "".join(c if c.isalnum() else "_" for c in variant.group)
    with _common.fresh_database(server_dsn, label) as dsn:
        _common.migrate(dsn)
        _common.add_jobs(dsn, IDENTIFIER, jobs)
        _common.analyze(dsn)
        result = variant.run(dsn, jobs)
        left = _common.jobs_left(dsn)

    if left or result.count < jobs:
        raise RuntimeError(
            f"{variant.group} {variant.config}: ran {result.count} of {jobs} jobs, "
            f"{left} left in the table"
        )

    variant.runs.append(result)
    _common.progress(
        f"{variant.group:<18} {variant.config:<28} {result.seconds:7.3f}s "
        f"{jobs / result.seconds:10,.0f} jobs/s  "
        f"cpu {1e6 * result.cpu / jobs:5.1f} us/job"
    )


def run_round(server_dsn: str, variants: list[Variant], jobs: int, repeat: int) -> None:
    for _ in range(repeat):
        for variant in variants:
            time_variant(server_dsn, variant, jobs)


def best(variants: list[Variant]) -> Variant:
    return min(variants, key=lambda variant: variant.median)


def unqueued(variants: list[Variant]) -> list[Variant]:
    """The configurations that claim only for free runners, as Node's default."""
    return [v for v in variants if v.ours is not None and v.ours.local_queue == 0]


def main() -> None:
    args = _common.parse_args(
        "Drain N no-op jobs: Node vs AsyncWorker vs threaded Worker vs raw SQL.",
        default_jobs=20_000,
        quick_jobs=5_000,
        extra=[
            (
                ["--repeat"],
                {"type": int, "default": None, "help": "runs per configuration"},
            ),
            (
                ["--processes"],
                {"type": int, "default": 2, "help": "worker processes (default 2)"},
            ),
        ],
    )
    repeat = args.extra.repeat or (1 if args.quick else 3)
    jobs = args.jobs

    with _common.server(args) as server_dsn:
        missing_node = _common.node_available()
        notes = [
            f"{jobs:,} no-op jobs per run, fresh database per run, median of {repeat}",
            "clock: first job start -> run-once returns (start-up excluded)",
        ]
        if missing_node:
            notes.append(f"Node skipped: {missing_node}")
        _common.describe(
            server_dsn, "drain: jobs/s emptying a queue of no-op jobs", notes
        )

        if args.quick:
            async_grid = [Config(500, 0.0, 0), Config(10, 0.0, 500), Config(50)]
            threaded_grid = [Config(100, 0.0, 0), Config(10, 0.0, 500)]
            node_grid = [100]
            sql_grid = [10, 500]
        else:
            # Without a local queue (graphile-worker's default) the delay
            # decides how much each completion write carries.
            delays = (0.0, 0.001)
            async_grid = [Config(c, d, 0) for c in (100, 500) for d in delays]
            async_grid += [Config(c) for c in (50, 100)]
            async_grid += [Config(c, 0.0, q) for c in (10, 50) for q in (500, 1000)]
            threaded_grid = [Config(c, d, 0) for c in (100, 200) for d in delays]
            threaded_grid += [Config(c) for c in (50, 100)]
            threaded_grid += [Config(c, 0.0, q) for c in (10, 50) for q in (500, 1000)]
            node_grid = [50, 100, 200]
            sql_grid = [10, 100, 500]

        node_default = Variant(
            "node default",
            f"concurrency {NODE_DEFAULT_CONCURRENCY}",
            node({"concurrency": NODE_DEFAULT_CONCURRENCY}),
        )
        node_sweep = [
            Variant(
                "node batched",
                f"concurrentJobs {c}, localQueue {NODE_LOCAL_QUEUE}",
                node(node_batched(c)),
            )
            for c in node_grid
        ]
        async_default = Variant(
            "async default", str(DEFAULTS), async_worker(DEFAULTS), DEFAULTS
        )
        async_sweep = [
            Variant("async sweep", str(c), async_worker(c), c) for c in async_grid
        ]
        threaded_default = Variant(
            "threaded default", str(DEFAULTS), threaded_worker(DEFAULTS), DEFAULTS
        )
        threaded_sweep = [
            Variant("threaded sweep", str(c), threaded_worker(c), c)
            for c in threaded_grid
        ]
        sql_variants = [
            Variant("sql limit", f"claim batches of {k}", sql_limit(k))
            for k in sql_grid
        ]

        first_round = [
            *sql_variants,
            async_default,
            *async_sweep,
            threaded_default,
            *threaded_sweep,
        ]
        if not missing_node:
            first_round[:0] = [node_default, *node_sweep]

        run_round(server_dsn, first_round, jobs, repeat)

        # The multi-process run uses the best async configuration found above.
        top = best([async_default, *async_sweep])
        assert top.ours is not None
        count = args.extra.processes
        multi = Variant(
            f"{count} processes",
            f"{count} x ({top.config})",
            processes(count, top.ours),
        )
        run_round(server_dsn, [multi], jobs, repeat)

    reference = node_default.median if node_default.runs else float("nan")
    limit = best(sql_variants).median

    def row(variant: Variant, name: str | None = None) -> list[str]:
        seconds = variant.median
        return [
            name or variant.group,
            variant.config,
            f"{seconds:.3f}",
            _common.fmt_rate(jobs / seconds),
            _common.fmt_rate(jobs / variant.fastest),
            _common.fmt_ratio(reference / seconds),
            f"{100 * limit / seconds:.0f}%",
            f"{variant.cpu_per_job:.1f}",
        ]

    rows: list[list[str]] = []
    if node_default.runs:
        rows.append(row(node_default))
        rows.append(row(best(node_sweep), "node batched (best)"))
    rows.append(row(async_default))
    rows.append(row(top, "async best"))
    rows.append(row(best(unqueued(async_sweep)), "async, no local queue (best)"))
    rows.append(row(threaded_default))
    rows.append(row(best([threaded_default, *threaded_sweep]), "threaded best"))
    rows.append(
        row(best(unqueued(threaded_sweep)), "threaded, no local queue (best)")
    )
    rows.append(row(multi))
    rows.extend(row(variant) for variant in sql_variants)
    headers = [
        "variant",
        "config",
        "seconds",
        "jobs/s",
        "best jobs/s",
        "x node default",
        "of sql limit",
        "worker cpu us/job",
    ]
    print("## summary (median of runs)")
    _common.print_table(headers, rows)
    print()
    print("## every configuration")
    sweep_rows = [
        row(variant)
        for variant in [*node_sweep, *async_sweep, *threaded_sweep]
        if variant.runs
    ]
    _common.print_table(headers, sweep_rows)


if __name__ == "__main__":
    main()
