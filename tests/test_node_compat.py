"""Compatibility with Node's graphile-worker, run from npm.

Node's ``graphile-worker`` packages are installed once into a cache folder
outside the repository (``$XDG_CACHE_HOME``, else the temporary directory),
``graphile_worker-node-<version>``, and reused by later runs. When npm cannot
install them the tests skip, saying why.

* Node 0.18.0's ``--schema-only`` and our ``migrate`` build identical catalogs
  and identical ``migrations`` rows, in the default and in a quoted schema.
* A database that Node 0.16.6 left at migration 18 (or 0.17.3 at 19) upgrades
  with our ``migrate`` to the catalog Node 0.18.0 builds.
* Node 0.18.0 workers run jobs that our ``add_job`` queued, once each, and
  our utilities work unchanged on a schema that Node installed.

0.17.3 is the latest 0.17 release (``npm view graphile-worker versions``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import msgspec
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from graphile_worker import JobSpec, RawJob, WorkerUtils
from tests.catalog import diff_catalogs, schema_catalog
from tests.conftest import (
    TEST_DB_PREFIX,
    _create_db,
    _drop_db,
    _new_db_name,
    dsn_with_dbname,
)

pytestmark = pytest.mark.node

LATEST = "0.18.0"
V16 = "0.16.6"  # its newest migration is 18
V17 = "0.17.3"  # its newest migration is 19
ALL_MIGRATIONS = list(range(1, 21))
BREAKING = {1, 3, 11, 13, 14, 16, 19}
NPM_TIMEOUT = 600  # seconds for one npm install
NODE_TIMEOUT = 120  # seconds for one run of the Node CLI
FAR = datetime(2100, 1, 1, tzinfo=UTC)
HELLO_TASK = """\
const fs = require("fs");
module.exports = async (payload, helpers) => {
  fs.appendFileSync(
    process.env.HELLO_OUT,
    JSON.stringify({ id: helpers.job.id, payload }) + "\\n"
  );
};
"""

_installed: dict[str, Path | str] = {}  # version -> binary, or why it failed


class Hello(msgspec.Struct):
    """The payload of the ``hello`` task in the Node tasks folder."""

    IDENTIFIER: ClassVar[str] = "hello"

    n: int


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or tempfile.gettempdir())


def _npm_install(version: str) -> Path | str:
    folder = cache_root() / f"graphile_worker-node-{version}"
    binary = folder / "node_modules" / ".bin" / "graphile-worker"
    manifest = folder / "node_modules" / "graphile-worker" / "package.json"
    if (
        binary.exists()
        and manifest.exists()
        and json.loads(manifest.read_text()).get("version") == version
    ):
        return binary

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{folder.name}-", dir=folder.parent))
    (staging / "package.json").write_text('{"private": true}\n')
    try:
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", f"graphile-worker@{version}"],
            cwd=staging,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        shutil.rmtree(staging, ignore_errors=True)
        return f"npm install graphile-worker@{version} timed out"

    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return f"npm install graphile-worker@{version} failed: {' / '.join(tail)}"

    shutil.rmtree(folder, ignore_errors=True)
    try:
        staging.rename(folder)
    except OSError:  # another run installed it first
        shutil.rmtree(staging, ignore_errors=True)

    return binary


def graphile_worker_bin(version: str) -> Path:
    """The CLI of graphile-worker ``version``, installed on first use."""
    if version not in _installed:
        _installed[version] = _npm_install(version)

    found = _installed[version]
    if isinstance(found, str):
        pytest.skip(found)

    return found


def node_dsn(dsn: str) -> str:
    """The connection string Node's ``pg`` understands for a libpq DSN."""
    params = conninfo_to_dict(dsn)
    auth = quote(str(params.get("user") or "postgres"), safe="")
    if params.get("password"):
        auth += ":" + quote(str(params["password"]), safe="")

    host = str(params.get("host") or "localhost")
    port = str(params.get("port") or 5432)
    dbname = quote(str(params.get("dbname") or "postgres"), safe="")
    return f"postgres://{auth}@/{dbname}?host={quote(host, safe='')}&port={port}"


def run_node(
    version: str,
    dsn: str,
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
) -> str:
    """Run the graphile-worker CLI; return its output, failing on a bad exit."""
    command = [str(graphile_worker_bin(version)), "-c", node_dsn(dsn), *args]
    done = subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{command[3:]} exited {done.returncode}: {output}"
    return output


def node_migrate(version: str, dsn: str, cwd: Path, schema: str | None = None) -> None:
    args = ["--schema-only"] if schema is None else ["--schema-only", "-s", schema]
    run_node(version, dsn, *args, cwd=cwd)


def our_migrate(dsn: str, schema: str = "graphile_worker") -> list[int]:
    with WorkerUtils(dsn=dsn, schema=schema) as utils:
        return utils.migrate()


def catalog(dsn: str, schema: str) -> dict[str, object]:
    with psycopg.connect(dsn) as conn:
        return schema_catalog(conn, schema)


def migrations(dsn: str, schema: str = "graphile_worker") -> list[Any]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            sql.SQL("select id, breaking from {}.migrations order by id").format(
                sql.Identifier(schema)
            )
        ).fetchall()


@pytest.fixture
def make_db(server_dsn: str) -> Iterator[Callable[[], str]]:
    """Make more empty databases for one test; all are dropped after it."""
    names: list[str] = []

    def make() -> str:
        name = _new_db_name(TEST_DB_PREFIX)
        _create_db(server_dsn, name, "template0")
        names.append(name)
        return dsn_with_dbname(server_dsn, name)

    try:
        yield make
    finally:
        for name in names:
            _drop_db(server_dsn, name)


@pytest.mark.parametrize("schema", ["graphile_worker", "my-worker"])
def test_schema_only_and_our_migrate_build_the_same_catalog(
    make_db: Callable[[], str], tmp_path: Path, schema: str
) -> None:
    node_db, our_db = make_db(), make_db()
    node_migrate(LATEST, node_db, tmp_path, schema)

    applied = our_migrate(our_db, schema)

    # On PostgreSQL 18 this includes the names of NOT NULL constraints.
    node_catalog, our_catalog = catalog(node_db, schema), catalog(our_db, schema)
    assert diff_catalogs(node_catalog, our_catalog) == {}
    assert node_catalog == our_catalog
    assert applied == ALL_MIGRATIONS
    expected = [(n, n in BREAKING) for n in ALL_MIGRATIONS]
    assert migrations(node_db, schema) == migrations(our_db, schema) == expected


@pytest.mark.parametrize(
    ("version", "left_at"), [(V16, 18), (V17, 19)], ids=["0.16", "0.17"]
)
def test_we_upgrade_what_older_node_releases_left(
    make_db: Callable[[], str], tmp_path: Path, version: str, left_at: int
) -> None:
    old_db, reference_db = make_db(), make_db()
    node_migrate(version, old_db, tmp_path)
    assert [row[0] for row in migrations(old_db)] == list(range(1, left_at + 1))
    with psycopg.connect(old_db, autocommit=True) as conn:
        conn.execute(
            "select graphile_worker.add_job('legacy', '{\"kept\": true}',"
            " queue_name => 'old-q', job_key => 'legacy-key')"
        )

    applied = our_migrate(old_db)

    node_migrate(LATEST, reference_db, tmp_path)
    assert applied == list(range(left_at + 1, 21))
    assert (
        diff_catalogs(
            catalog(reference_db, "graphile_worker"), catalog(old_db, "graphile_worker")
        )
        == {}
    )
    assert migrations(old_db) == migrations(reference_db)
    with WorkerUtils(dsn=old_db) as utils:
        (job,) = utils.complete_jobs([row[0] for row in _job_ids(old_db)])
    assert (job.task_identifier, job.queue_name, job.key, job.payload) == (
        "legacy",
        "old-q",
        "legacy-key",
        {"kept": True},
    )


def _job_ids(dsn: str) -> list[Any]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "select id from graphile_worker._private_jobs order by id"
        ).fetchall()


def test_node_migrate_accepts_our_schema_as_is(
    empty_db_dsn: str, tmp_path: Path
) -> None:
    our_migrate(empty_db_dsn)
    with psycopg.connect(empty_db_dsn) as conn:
        before = conn.execute(
            "select id, breaking, ts from graphile_worker.migrations order by id"
        ).fetchall()

    node_migrate(LATEST, empty_db_dsn, tmp_path)

    with psycopg.connect(empty_db_dsn) as conn:
        after = conn.execute(
            "select id, breaking, ts from graphile_worker.migrations order by id"
        ).fetchall()
    assert after == before


def test_node_worker_runs_our_jobs_once_each(empty_db_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "hello.js").write_text(HELLO_TASK)
    out = tmp_path / "out.jsonl"
    our_migrate(empty_db_dsn)
    with WorkerUtils(dsn=empty_db_dsn) as utils:
        plain = [utils.add_job(Hello(n)) for n in range(5)]
        queued = [utils.add_job(Hello(n), JobSpec(queue_name="serial")) for n in (5, 6)]
        batch = utils.add_jobs([Hello(7), (Hello(8), JobSpec(priority=-1))])
        utils.add_job(Hello(90), JobSpec(job_key="replaced"))
        replaced = utils.add_job(Hello(9), JobSpec(job_key="replaced"))
        raw = utils.add_raw_job("hello", {"n": 10}, JobSpec(flags=["any"]))
        later = utils.add_job(Hello(11), JobSpec(run_at=FAR))

    run_node(LATEST, empty_db_dsn, "--once", cwd=tmp_path, env={"HELLO_OUT": str(out)})

    ran = [json.loads(line) for line in out.read_text().splitlines()]
    by_n = {job.payload["n"]: job.id for job in [*plain, *queued, *batch, raw]}
    by_n[9] = replaced.id
    expected = {by_n[n]: {"n": n} for n in range(11)}
    # node-postgres hands bigint ids to JavaScript as strings
    assert sorted(int(entry["id"]) for entry in ran) == sorted(expected)  # once each
    assert {int(entry["id"]): entry["payload"] for entry in ran} == expected
    assert [row[0] for row in _job_ids(empty_db_dsn)] == [later.id]
    with psycopg.connect(empty_db_dsn) as conn:
        queues = conn.execute(
            "select queue_name, locked_at from graphile_worker._private_job_queues"
        ).fetchall()
    assert queues == [("serial", None)]


@pytest.mark.parametrize("schema", ["graphile_worker", "my-worker"])
def test_our_utilities_work_on_a_schema_node_installed(
    empty_db_dsn: str, tmp_path: Path, schema: str
) -> None:
    node_migrate(LATEST, empty_db_dsn, tmp_path, schema)
    before = migrations(empty_db_dsn, schema)

    with WorkerUtils(dsn=empty_db_dsn, schema=schema) as utils:
        applied = utils.migrate()
        job = utils.add_job(
            Hello(1),
            JobSpec(queue_name="q", job_key="k", priority=3, run_at=FAR, flags=["f"]),
        )
        again = utils.add_job(Hello(2), JobSpec(job_key="k", run_at=FAR))
        many = utils.add_raw_jobs(
            [RawJob(identifier="other", payload={"i": i}) for i in range(3)]
        )
        first = next(job for job in many if job.payload == {"i": 0})
        failed = utils.permanently_fail_jobs([first.id])
        removed = utils.remove_job("k")
        utils.cleanup(["DELETE_PERMAFAILED_JOBS", "GC_JOB_QUEUES"])

    with psycopg.connect(empty_db_dsn) as conn:
        name = sql.Identifier(schema)
        rows = conn.execute(
            sql.SQL(
                "select t.identifier, j.payload::text from {}._private_jobs j"
                " join {}._private_tasks t on t.id = j.task_id order by j.id"
            ).format(name, name)
        ).fetchall()
        queues = conn.execute(
            sql.SQL("select count(*) from {}._private_job_queues").format(name)
        ).fetchone()

    assert applied == []
    assert migrations(empty_db_dsn, schema) == before
    assert (job.task_identifier, job.queue_name, job.priority, job.flags) == (
        "hello",
        "q",
        3,
        {"f": True},
    )
    assert (again.id, again.revision, again.payload) == (job.id, 1, {"n": 2})
    assert failed[0].last_error == "Manually marked as failed"
    assert removed is not None and removed.id == job.id
    assert sorted(job.payload["i"] for job in many) == [0, 1, 2]
    assert sorted(json.loads(row[1])["i"] for row in rows) == [1, 2]
    assert {row[0] for row in rows} == {"other"}
    assert queues == (0,)
