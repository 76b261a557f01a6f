"""Idle add-to-start latency: how soon an idle worker starts a job just added.

One worker process waits idle on a fresh database (LISTEN/NOTIFY, default
poll interval of 2 s). The benchmark process adds one job at a time with
``WorkerUtils.add_raw_job`` (the same adder for every worker), about every
20 ms; the task records the wall clock at its start. Latency is that start
time minus the wall clock right before ``add_raw_job`` was called, so it
includes the insert's own round trip and commit (shown separately as
"add_job call"). Both clocks are the machine's realtime clock: Python's
``time.time()`` and Node's ``performance.timeOrigin + performance.now()``.

Workers: ours (AsyncWorker and threaded Worker, started with
``python -m graphile_worker``, concurrency 10), and Node's graphile-worker
0.18 ``run()`` with ``concurrency: 10`` and with the batched preset
(``localQueue: {size: 500}``, ``completeJobBatchDelay: 0``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import _common

from graphile_worker import WorkerUtils

IDENTIFIER = "latency"
SPACING = 0.020  # seconds between two adds
WARMUP = 10  # jobs added and discarded before measuring
START_TIMEOUT = 60.0  # seconds for a worker to run its first job

NODE_WORKER = """
import { appendFileSync } from "node:fs";
const out = process.env.BENCH_OUT;
appendFileSync(out, `# skew ${(wallMs() - Date.now()).toFixed(3)}\\n`);
const taskList = {
  latency: async (payload) => {
    const started = wallMs();
    appendFileSync(out, `${payload.n} ${started.toFixed(3)}\\n`);
  },
};
await runUntilStopped(taskList);
"""


@dataclass(frozen=True)
class Worker:
    """How to start one kind of worker."""

    name: str
    config: str
    python_args: tuple[str, ...] = ()
    node_options: dict[str, object] | None = None


@contextmanager
def started(worker: Worker, dsn: str, out: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start the worker process; stop it (SIGTERM, by pid) on leaving."""
    with contextlib.ExitStack() as stack:
        if worker.node_options is not None:
            script = stack.enter_context(_common.node_script(NODE_WORKER))
            command = ["node", str(script)]
            env = _common.node_env(
                dsn, BENCH_OUT=str(out), GW_OPTIONS=json.dumps(worker.node_options)
            )
        else:
            command = [sys.executable, "-m", "graphile_worker", "-c", dsn, "-q"]
            command += worker.python_args
            env = {**os.environ, "BENCH_OUT": str(out)}

        process = subprocess.Popen(
            command,
            cwd=_common.BENCH_DIR,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield process
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker we started, then SIGKILL it if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def read_starts(out: Path) -> tuple[dict[int, float], float | None]:
    """Job number -> start time (ms) from the worker's file, and Node's clock skew."""
    starts: dict[int, float] = {}
    skew: float | None = None
    if not out.exists():
        return starts, skew

    for line in out.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[:2] == ["#", "skew"]:
            skew = float(parts[2])
        elif len(parts) == 2 and not line.startswith("#"):
            starts[int(parts[0])] = float(parts[1])
    return starts, skew


def wait_for(
    out: Path, numbers: set[int], timeout: float, process: subprocess.Popen[bytes]
) -> dict[int, float]:
    deadline = time.monotonic() + timeout
    while True:
        starts, _ = read_starts(out)
        if numbers <= starts.keys():
            return starts
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited with {process.returncode}")
        if time.monotonic() > deadline:
            missing = sorted(numbers - starts.keys())[:5]
            raise RuntimeError(f"jobs {missing}... never started")
        time.sleep(0.01)


@dataclass(frozen=True)
class Result:
    latencies: list[float]
    add_ms: list[float]
    skew: float | None

    @property
    def after_add(self) -> list[float]:
        """Start minus the moment add_raw_job returned (its commit seen)."""
        pairs = zip(self.latencies, self.add_ms, strict=True)
        return [latency - add for latency, add in pairs]


def measure(worker: Worker, server_dsn: str, jobs: int) -> Result:
    label = "latency_" + worker.name.replace(" ", "_")
    with (
        _common.fresh_database(server_dsn, label) as dsn,
        tempfile.TemporaryDirectory() as tmp,
    ):
        _common.migrate(dsn)
        out = Path(tmp) / "starts.txt"
        with WorkerUtils(dsn=dsn) as utils, started(worker, dsn, out) as process:
            # The first job tells us the worker is up; the others warm it up.
            utils.add_raw_job(IDENTIFIER, {"n": -1})
            wait_for(out, {-1}, START_TIMEOUT, process)
            for n in range(2, WARMUP + 2):
                utils.add_raw_job(IDENTIFIER, {"n": -n})
                time.sleep(SPACING)
            wait_for(out, {-n for n in range(1, WARMUP + 2)}, 10, process)

            before: dict[int, float] = {}
            add_ms: list[float] = []
            began = time.monotonic()
            for n in range(jobs):
                before[n] = time.time() * 1000
                utils.add_raw_job(IDENTIFIER, {"n": n})
                add_ms.append(time.time() * 1000 - before[n])
                pause = began + (n + 1) * SPACING - time.monotonic()
                if pause > 0:
                    time.sleep(pause)

            starts = wait_for(out, set(range(jobs)), 30, process)
            _, skew = read_starts(out)

    return Result([starts[n] - before[n] for n in range(jobs)], add_ms, skew)


def main() -> None:
    args = _common.parse_args(
        "Idle add-to-start latency of one job at a time, ours vs Node.",
        default_jobs=300,
        quick_jobs=50,
    )
    workers = [
        Worker(
            "async", "AsyncWorker, concurrency 10", ("--tasks", "_tasks:latency_async")
        ),
        Worker(
            "threaded",
            "threaded Worker, concurrency 10",
            ("--threaded", "--tasks", "_tasks:latency_sync"),
        ),
    ]
    with _common.server(args) as server_dsn:
        missing_node = _common.node_available()
        if not missing_node:
            workers += [
                Worker(
                    "node default",
                    "run(), concurrency 10",
                    node_options={"concurrency": 10},
                ),
                Worker(
                    "node batched",
                    "run(), concurrentJobs 10, localQueue 500",
                    node_options={
                        "preset": {
                            "worker": {
                                "concurrentJobs": 10,
                                "localQueue": {"size": 500},
                                "completeJobBatchDelay": 0,
                                "failJobBatchDelay": 0,
                            }
                        }
                    },
                ),
            ]
        notes = [
            f"{args.jobs} jobs per worker, one at a time every "
            f"{SPACING * 1000:.0f} ms, after {WARMUP + 1} warm-up jobs",
            "latency = task start (wall clock, in the worker) - "
            "just before add_raw_job",
        ]
        if missing_node:
            notes.append(f"Node skipped: {missing_node}")
        _common.describe(
            server_dsn, "latency: idle add-to-start, one job at a time", notes
        )

        results: dict[str, Result] = {}
        for worker in workers:
            _common.progress(f"latency of {worker.name}")
            results[worker.name] = measure(worker, server_dsn, args.jobs)

    reference = (
        statistics.median(results["node default"].latencies)
        if "node default" in results
        else float("nan")
    )
    rows = []
    for worker in workers:
        result = results[worker.name]
        p50 = _common.percentile(result.latencies, 50)
        rows.append(
            [
                worker.name,
                worker.config,
                f"{p50:.2f}",
                f"{_common.percentile(result.latencies, 90):.2f}",
                f"{_common.percentile(result.latencies, 99):.2f}",
                f"{max(result.latencies):.2f}",
                f"{min(result.latencies):.2f}",
                f"{statistics.median(result.add_ms):.2f}",
                f"{statistics.median(result.after_add):.2f}",
                _common.fmt_ratio(p50 / reference),
            ]
        )
    _common.print_table(
        [
            "worker",
            "config",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "min ms",
            "add_job call p50 ms",
            "after add returned p50 ms",
            "p50 / node default",
        ],
        rows,
    )
    skews = [r.skew for r in results.values() if r.skew is not None]
    if skews:
        print()
        print(
            "Node clock check: performance.timeOrigin + now() - Date.now() = "
            + ", ".join(f"{skew:+.3f} ms" for skew in skews)
            + " (0 to +1 ms is agreement: Date.now() truncates to whole ms)"
        )


if __name__ == "__main__":
    main()
