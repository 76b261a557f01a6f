"""Enqueue throughput: one call adding N jobs, and single adds in a loop.

Batch: one ``add_raw_jobs`` (ours, async, and typed ``add_jobs`` of Structs)
against one ``workerUtils.addJobs`` (Node) of N jobs ``noop {"n": i}``
(20,000 by default). Singles: 1,000 ``add_raw_job`` calls one after another
(async and blocking utilities) against Node's ``workerUtils.addJob``, and the
SQL floor: ``select graphile_worker.add_job('noop', $1::json)`` on one psycopg
connection with a prepared statement.

Each run gets a fresh, migrated database and is warmed up (a 10-job batch, or
10 single adds) before the clock starts; the job list is built before the
clock too, so payload encoding is timed on both sides. Each variant runs
``--repeat`` times (3, or 1 with ``--quick``), round-robin; the table shows the
median.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import _common
import msgspec
import psycopg

from graphile_worker import AsyncWorkerUtils, RawJob, WorkerUtils

IDENTIFIER = "noop"
WARMUP = 10
SINGLES = 1_000


class Noop(msgspec.Struct):
    """A typed payload for ``add_jobs``."""

    IDENTIFIER: ClassVar[str] = "noop"

    n: int


NODE_ENQUEUE = """
const mode = process.env.MODE;
const n = Number(process.env.N);
const utils = await gw.makeWorkerUtils({
  connectionString: process.env.DATABASE_URL,
  logger: quietLogger,
});
let seconds;
try {
  if (mode === "batch") {
    const spec = (i) => ({ identifier: "noop", payload: { n: i } });
    await utils.addJobs(Array.from({ length: 10 }, (_, i) => spec(-1 - i)));
    const specs = Array.from({ length: n }, (_, i) => spec(i));
    const began = performance.now();
    await utils.addJobs(specs);
    seconds = (performance.now() - began) / 1000;
  } else {
    for (let i = 1; i <= 10; i++) await utils.addJob("noop", { n: -i });
    const began = performance.now();
    for (let i = 0; i < n; i++) await utils.addJob("noop", { n: i });
    seconds = (performance.now() - began) / 1000;
  }
} finally {
  await utils.release();
}
emit({ seconds });
"""


@dataclass
class Variant:
    kind: str  # "batch" or "single"
    name: str
    how: str
    run: Callable[[str, int], float]
    seconds: list[float] = field(default_factory=list)


def ours_batch(typed: bool) -> Callable[[str, int], float]:
    def run(dsn: str, count: int) -> float:
        async def go() -> float:
            async with AsyncWorkerUtils(dsn=dsn) as utils:
                await utils.add_raw_jobs(
                    [
                        RawJob(identifier=IDENTIFIER, payload={"n": -i})
                        for i in range(WARMUP)
                    ]
                )
                if typed:
                    tasks = [Noop(n=i) for i in range(count)]
                    began = time.perf_counter()
                    await utils.add_jobs(tasks)
                else:
                    jobs = [
                        RawJob(identifier=IDENTIFIER, payload={"n": i})
                        for i in range(count)
                    ]
                    began = time.perf_counter()
                    await utils.add_raw_jobs(jobs)
                return time.perf_counter() - began

        return asyncio.run(go())

    return run


def ours_singles_async(dsn: str, count: int) -> float:
    async def go() -> float:
        async with AsyncWorkerUtils(dsn=dsn) as utils:
            for i in range(1, WARMUP + 1):
                await utils.add_raw_job(IDENTIFIER, {"n": -i})
            began = time.perf_counter()
            for i in range(count):
                await utils.add_raw_job(IDENTIFIER, {"n": i})
            return time.perf_counter() - began

    return asyncio.run(go())


def ours_singles_sync(dsn: str, count: int) -> float:
    with WorkerUtils(dsn=dsn) as utils:
        for i in range(1, WARMUP + 1):
            utils.add_raw_job(IDENTIFIER, {"n": -i})
        began = time.perf_counter()
        for i in range(count):
            utils.add_raw_job(IDENTIFIER, {"n": i})
        return time.perf_counter() - began


def sql_singles(dsn: str, count: int) -> float:
    query = "select graphile_worker.add_job(%s::text, %s::json)"
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(1, WARMUP + 1):
            conn.execute(query, (IDENTIFIER, f'{{"n": {-i}}}'), prepare=True)
        began = time.perf_counter()
        for i in range(count):
            conn.execute(query, (IDENTIFIER, f'{{"n": {i}}}'), prepare=True)
        return time.perf_counter() - began


def node(mode: str) -> Callable[[str, int], float]:
    def run(dsn: str, count: int) -> float:
        result = _common.run_node(NODE_ENQUEUE, dsn, MODE=mode, N=str(count))
        return float(result["seconds"])

    return run


def main() -> None:
    args = _common.parse_args(
        "Enqueue throughput: one add_jobs of N jobs, and single add_job calls.",
        default_jobs=20_000,
        quick_jobs=5_000,
        extra=[
            (
                ["--singles"],
                {
                    "type": int,
                    "default": None,
                    "help": f"single adds (default {SINGLES})",
                },
            ),
            (["--repeat"], {"type": int, "default": None, "help": "runs per variant"}),
        ],
    )
    repeat = args.extra.repeat or (1 if args.quick else 3)
    singles = args.extra.singles or (300 if args.quick else SINGLES)
    with _common.server(args) as server_dsn:
        missing_node = _common.node_available()
        variants = [
            Variant(
                "batch",
                "ours add_raw_jobs",
                "AsyncWorkerUtils, RawJob dicts",
                ours_batch(False),
            ),
            Variant(
                "batch",
                "ours add_jobs",
                "AsyncWorkerUtils, typed Structs",
                ours_batch(True),
            ),
            Variant(
                "single",
                "ours add_raw_job",
                "AsyncWorkerUtils, awaited in turn",
                ours_singles_async,
            ),
            Variant(
                "single",
                "ours add_raw_job",
                "WorkerUtils (blocking)",
                ours_singles_sync,
            ),
            Variant(
                "single",
                "sql add_job",
                "psycopg, prepared, one connection",
                sql_singles,
            ),
        ]
        if not missing_node:
            variants[2:2] = [
                Variant("batch", "node addJobs", "makeWorkerUtils", node("batch"))
            ]
            variants.append(
                Variant(
                    "single",
                    "node addJob",
                    "makeWorkerUtils, awaited in turn",
                    node("single"),
                )
            )
        notes = [
            f"batch: one call of {args.jobs:,} jobs; single: {singles:,} calls in "
            f"turn; fresh database per run, median of {repeat}",
        ]
        if missing_node:
            notes.append(f"Node skipped: {missing_node}")
        _common.describe(server_dsn, "enqueue: jobs/s added", notes)

        for _ in range(repeat):
            for variant in variants:
                count = args.jobs if variant.kind == "batch" else singles
                with _common.fresh_database(server_dsn, "enqueue") as dsn:
                    _common.migrate(dsn)
                    seconds = variant.run(dsn, count)
                    stored = _common.jobs_left(dsn)
                if stored != count + WARMUP:
                    raise RuntimeError(
                        f"{variant.name}: {stored} jobs stored, not {count + WARMUP}"
                    )
                variant.seconds.append(seconds)
                _common.progress(
                    f"{variant.kind:<6} {variant.name:<18} "
                    f"{count / seconds:10,.0f} jobs/s"
                )

    rows = []
    for kind in ("batch", "single"):
        group = [v for v in variants if v.kind == kind]
        node_ref = next((v for v in group if v.name.startswith("node")), None)
        for variant in group:
            count = args.jobs if kind == "batch" else singles
            seconds = statistics.median(variant.seconds)
            ratio = (
                statistics.median(node_ref.seconds) / seconds
                if node_ref
                else float("nan")
            )
            rows.append(
                [
                    kind,
                    variant.name,
                    variant.how,
                    f"{count:,}",
                    f"{seconds:.3f}",
                    _common.fmt_rate(count / seconds),
                    f"{1e6 * seconds / count:.1f}",
                    _common.fmt_ratio(ratio),
                ]
            )
    _common.print_table(
        ["kind", "variant", "how", "jobs", "seconds", "jobs/s", "us/job", "x node"],
        rows,
    )


if __name__ == "__main__":
    main()
