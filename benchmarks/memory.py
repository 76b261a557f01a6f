"""Memory: the RSS of one worker process over a long run of no-op jobs.

One worker process (``python -m graphile_worker``, AsyncWorker then threaded
Worker; then Node's graphile-worker 0.18 ``run()``) works through N no-op jobs
(1,000,000 by default; 100,000 with ``--quick``) on a fresh database. The
benchmark feeds the jobs in chunks of 50,000 ``add_raw_jobs`` while the worker
runs, keeping at most two chunks queued, so the table never holds N rows. The
task reads its own process's RSS (``/proc/self/statm`` in Python,
``process.memoryUsage().rss`` in Node) every 50,000 jobs (N/10 for smaller
runs); the peak is ``VmHWM`` from ``/proc/PID/status`` read from outside at the
end. Growth is the RSS at the end minus the RSS after the warm-up (the first
10% of the jobs: 100,000 by default).

All workers run at concurrency 100 (``--concurrency``): ours with
``complete_delay`` 0, Node with its batched preset (``localQueue`` 500,
``completeJobBatchDelay`` 0) so that a run takes well under a minute or two.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import _common

IDENTIFIER = "noop"
CHUNK = 50_000
POLL = 0.25  # seconds between checks of the worker's progress

NODE_WORKER = """
import { appendFileSync } from "node:fs";
const out = process.env.BENCH_OUT;
const every = Number(process.env.BENCH_SAMPLE_EVERY);
let count = 0;
const taskList = {
  noop: async () => {
    count++;
    if (count % every === 0) {
      const rss = Math.round(process.memoryUsage().rss / 1024);
      appendFileSync(out, `${count} ${rss} ${(wallMs() / 1000).toFixed(3)}\\n`);
    }
  },
};
await runUntilStopped(taskList);
"""


@dataclass(frozen=True)
class Sample:
    count: int
    rss_mb: float
    at: float  # wall clock, seconds


@dataclass(frozen=True)
class Result:
    name: str
    config: str
    jobs: int
    samples: list[Sample]
    peak_mb: float
    seconds: float


def status_kb(pid: int, field: str) -> float:
    """A ``kB`` field of ``/proc/PID/status``, e.g. ``VmHWM``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    return float("nan")


def read_samples(out: Path) -> list[Sample]:
    if not out.exists():
        return []
    samples = []
    for line in out.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            samples.append(Sample(int(parts[0]), int(parts[1]) / 1024, float(parts[2])))
    return samples


@contextlib.contextmanager
def worker_process(
    command: list[str], env: dict[str, str], cwd: Path | None
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_one(
    name: str,
    config: str,
    server_dsn: str,
    jobs: int,
    every: int,
    *,
    python: list[str] | None = None,
    node: dict[str, object] | None = None,
) -> Result:
    with contextlib.ExitStack() as stack:
        dsn = stack.enter_context(_common.fresh_database(server_dsn, "memory"))
        out = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "rss.txt"
        _common.migrate(dsn)
        sampling = {"BENCH_OUT": str(out), "BENCH_SAMPLE_EVERY": str(every)}
        if node is not None:
            script = stack.enter_context(_common.node_script(NODE_WORKER))
            command = ["node", str(script)]
            env = _common.node_env(dsn, GW_OPTIONS=json.dumps(node), **sampling)
            cwd = None
        else:
            assert python is not None
            command = [
                sys.executable,
                "-m",
                "graphile_worker",
                "-c",
                dsn,
                "-q",
                *python,
            ]
            env = {**os.environ, **sampling}
            cwd = _common.BENCH_DIR

        process = stack.enter_context(worker_process(command, env, cwd))
        chunk = min(CHUNK, jobs)
        added = 0
        began = time.time()
        while True:
            samples = read_samples(out)
            if samples and samples[-1].count >= jobs:
                break
            if process.poll() is not None:
                stderr = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(
                    f"{name} worker exited {process.returncode}: {stderr[-2000:]}"
                )
            if added < jobs and _common.jobs_left(dsn) < chunk:
                size = min(chunk, jobs - added)
                _common.add_jobs(dsn, IDENTIFIER, size, start=added)
                if added == 0:
                    began = time.time()  # the clock starts when jobs are there
                added += size
                continue
            time.sleep(POLL)
        peak = status_kb(process.pid, "VmHWM") / 1024

    return Result(name, config, jobs, samples, peak, samples[-1].at - began)


def main() -> None:
    args = _common.parse_args(
        "RSS of one worker process over N no-op jobs, ours vs Node.",
        default_jobs=1_000_000,
        quick_jobs=100_000,
        extra=[
            (["--concurrency"], {"type": int, "default": 100}),
            (
                ["--node-jobs"],
                {
                    "type": int,
                    "default": None,
                    "help": "jobs for Node (default: --jobs)",
                },
            ),
            (["--skip-node"], {"action": "store_true"}),
        ],
    )
    jobs = args.jobs
    every = CHUNK if jobs >= 10 * CHUNK else max(1, jobs // 10)
    concurrency = args.extra.concurrency
    node_jobs = args.extra.node_jobs or jobs
    with _common.server(args) as server_dsn:
        missing_node = (
            "--skip-node" if args.extra.skip_node else _common.node_available()
        )
        notes = [
            f"{jobs:,} no-op jobs fed in chunks of {min(CHUNK, jobs):,}; "
            f"RSS sampled every {every:,} jobs; warm-up = first {jobs // 10:,} jobs",
            f"concurrency {concurrency} for every worker",
        ]
        if missing_node:
            notes.append(f"Node skipped: {missing_node}")
        elif node_jobs != jobs:
            notes.append(f"Node ran {node_jobs:,} jobs (smaller N)")
        _common.describe(server_dsn, "memory: worker RSS over a long run", notes)

        results = []
        for name, flags in (
            ("async", ["--tasks", "_tasks:memory_async"]),
            ("threaded", ["--threaded", "--tasks", "_tasks:memory_sync"]),
        ):
            _common.progress(f"memory of {name} over {jobs:,} jobs")
            results.append(
                run_one(
                    name,
                    f"concurrency {concurrency}",
                    server_dsn,
                    jobs,
                    every,
                    python=[*flags, "-j", str(concurrency)],
                )
            )
        if not missing_node:
            node_every = CHUNK if node_jobs >= 10 * CHUNK else max(1, node_jobs // 10)
            _common.progress(f"memory of node over {node_jobs:,} jobs")
            results.append(
                run_one(
                    "node batched",
                    f"concurrentJobs {concurrency}, localQueue 500",
                    server_dsn,
                    node_jobs,
                    node_every,
                    node={
                        "preset": {
                            "worker": {
                                "concurrentJobs": concurrency,
                                "localQueue": {"size": 500},
                                "completeJobBatchDelay": 0,
                                "failJobBatchDelay": 0,
                            }
                        }
                    },
                )
            )

    rows = []
    for result in results:
        warm_count = result.jobs // 10
        warm = next(s for s in result.samples if s.count >= warm_count)
        end = result.samples[-1]
        rows.append(
            [
                result.name,
                result.config,
                f"{result.jobs:,}",
                _common.fmt_rate(result.jobs / result.seconds),
                f"{result.samples[0].rss_mb:.1f}",
                f"{warm.rss_mb:.1f}",
                f"{end.rss_mb:.1f}",
                f"{end.rss_mb - warm.rss_mb:+.1f}",
                f"{result.peak_mb:.1f}",
            ]
        )
    _common.print_table(
        [
            "worker",
            "config",
            "jobs",
            "jobs/s",
            "RSS first MB",
            "RSS warm MB",
            "RSS end MB",
            "growth MB",
            "peak MB",
        ],
        rows,
    )
    print()
    print("## RSS (MB) by jobs done")
    counts = sorted({s.count for r in results for s in r.samples})
    series = [{s.count: s.rss_mb for s in r.samples} for r in results]
    _common.print_table(
        ["jobs done", *(r.name for r in results)],
        [
            [f"{c:,}", *(f"{s[c]:.1f}" if c in s else "" for s in series)]
            for c in counts
        ],
    )


if __name__ == "__main__":
    main()
