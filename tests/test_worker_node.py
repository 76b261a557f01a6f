"""Our workers run jobs that Node's graphile-worker 0.18 added with ``addJob``.

Node installs the schema and adds the jobs through its own ``makeWorkerUtils``;
a Python worker of each flavour then runs them, once each, with the payloads
Node stored, honouring the queue, priority and ``runAt`` Node gave them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from graphile_worker import (
    AsyncWorker,
    AsyncWorkerContext,
    Worker,
    WorkerContext,
    WorkerOptions,
    task,
)
from tests.test_node_compat import LATEST, graphile_worker_bin, node_dsn

pytestmark = pytest.mark.node

NODE_TIMEOUT = 120  # seconds for the Node script

ADD_JOBS = """\
const { makeWorkerUtils } = require(process.env.GRAPHILE_WORKER_MODULE);

async function main() {
  const utils = await makeWorkerUtils({
    connectionString: process.env.DATABASE_URL,
  });
  try {
    await utils.migrate();
    const added = [];
    for (let n = 0; n < 5; n++) {
      added.push(await utils.addJob("hello", { n }));
    }
    added.push(await utils.addJob("hello", { n: 5 }, { queueName: "serial" }));
    added.push(await utils.addJob("hello", { n: 6 }, { queueName: "serial" }));
    added.push(await utils.addJob("hello", { n: 7 }, { priority: -5 }));
    added.push(await utils.addJob("hello", { n: 8 }, { jobKey: "k" }));
    added.push(await utils.addJob("hello", { n: 9 }, { jobKey: "k" }));
    added.push(
      await utils.addJob("hello", { n: 10 }, { runAt: new Date("2100-01-01") })
    );
    console.log(JSON.stringify(added.map((job) => String(job.id))));
  } finally {
    await utils.release();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
"""


def node_add_jobs(dsn: str, folder: Path) -> list[int]:
    """Run the Node script; return the ids of the jobs ``addJob`` gave back."""
    module = graphile_worker_bin(LATEST).parent.parent / "graphile-worker"
    script = folder / "add_jobs.js"
    script.write_text(ADD_JOBS)
    done = subprocess.run(
        ["node", str(script)],
        cwd=folder,
        env={
            **os.environ,
            "DATABASE_URL": node_dsn(dsn),
            "GRAPHILE_WORKER_MODULE": str(module),
        },
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return [int(job_id) for job_id in json.loads(done.stdout.strip().splitlines()[-1])]


def stored_jobs(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as connection:
        return connection.execute(
            "select id, payload::text from graphile_worker._private_jobs order by id"
        ).fetchall()


@pytest.mark.parametrize("flavour", ["async", "threaded"])
def test_our_worker_runs_jobs_node_added_once_each(
    empty_db_dsn: str, tmp_path: Path, flavour: str
) -> None:
    ids = node_add_jobs(empty_db_dsn, tmp_path)
    assert ids[8] == ids[9]  # the job key replaced the job Node added first
    ran: list[tuple[int, int]] = []

    @task("hello")
    def hello(payload: dict[str, int], ctx: WorkerContext) -> None:
        ran.append((ctx.job.id, payload["n"]))

    @task("hello")
    async def hello_async(payload: dict[str, int], ctx: AsyncWorkerContext) -> None:
        ran.append((ctx.job.id, payload["n"]))

    if flavour == "threaded":
        settings = WorkerOptions(dsn=empty_db_dsn, tasks=[hello], concurrency=1)
        with Worker(settings) as worker:
            worker.run_once()
    else:

        async def run_async() -> None:
            settings = WorkerOptions(
                dsn=empty_db_dsn, tasks=[hello_async], concurrency=1
            )
            async with AsyncWorker(settings) as worker:
                await worker.run_once()

        anyio.run(run_async)

    # Priority -5 first; the rest by run_at, the order Node added them in, but
    # for the queue's second job, which must wait for the first (and may then
    # go after later jobs: see the xfail in test_worker_async.py).
    order = [n for _, n in ran]
    assert order[0] == 7
    assert [n for n in order if n != 6] == [7, 0, 1, 2, 3, 4, 5, 9]
    assert order.index(5) < order.index(6)
    job_of = dict(zip([*range(8), 9, 10], [*ids[:8], ids[9], ids[10]], strict=True))
    assert sorted(ran) == sorted((job_of[n], n) for n in [*range(8), 9])
    assert stored_jobs(empty_db_dsn) == [(ids[10], '{"n":10}')]
