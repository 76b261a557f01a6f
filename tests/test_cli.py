"""The ``graphile-worker`` command, run as ``python -m graphile_worker``.

Every test runs the command in a subprocess, from the ``tests`` folder so that
``--tasks cli_tasks`` finds :mod:`tests.cli_tasks`, against a database of the
test bed (see ``conftest.py``).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest
from psycopg import sql

from graphile_worker import LATEST_MIGRATION, JobSpec, WorkerUtils
from tests.cli_tasks import CREATE_TABLE

TESTS_DIR = Path(__file__).resolve().parent
RUN_TIMEOUT = 60.0  # seconds any one command may take
READY_TIMEOUT = 30.0  # seconds for a running worker to start listening
EXIT_TIMEOUT = 20.0  # seconds for a running worker to exit once told to
BAD_DSN = "postgresql://nobody@127.0.0.1:1/x"  # nothing listens on port 1
EXIT_BREAKING = 57
BREAKING_NOTICE = '{"migrationNumber":21,"breaking":true}'

Result = subprocess.CompletedProcess[str]


def _env() -> dict[str, str]:
    """This environment without any database settings, so only ``-c`` counts."""
    return {
        name: value
        for name, value in os.environ.items()
        if name != "DATABASE_URL" and not name.startswith("PG")
    }


def run_cli(*args: str, cwd: Path = TESTS_DIR) -> Result:
    """Run ``python -m graphile_worker ARGS`` to the end."""
    return subprocess.run(
        [sys.executable, "-m", "graphile_worker", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def one_error_line(result: Result) -> str:
    """The single line a failing command wrote to stderr."""
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("graphile-worker: error: "), lines[0]
    return lines[0]


def query(dsn: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement and return its rows (none for a command)."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        cursor = connection.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def add_visits(dsn: str, identifier: str, names: list[str]) -> None:
    """Create the visits table and add one job per name."""
    query(dsn, CREATE_TABLE)
    with WorkerUtils(dsn=dsn) as utils:
        for name in names:
            utils.add_raw_job(identifier, {"name": name})


@pytest.fixture
def worker_process(
    db_dsn: str, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start a long-running worker; it is killed after the test if still alive."""
    started: list[subprocess.Popen[str]] = []
    logs: list[IO[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        log = (tmp_path / f"stderr-{len(started)}.log").open("w+")
        logs.append(log)
        process = subprocess.Popen(
            [sys.executable, "-m", "graphile_worker", "-c", db_dsn, *args],
            cwd=TESTS_DIR,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
    for log in logs:
        log.close()


def wait_listening(dsn: str, process: subprocess.Popen[str]) -> None:
    """Wait until the worker's LISTEN connection is up, so NOTIFY reaches it."""
    deadline = time.monotonic() + READY_TIMEOUT
    with psycopg.connect(dsn, autocommit=True) as connection:
        while time.monotonic() < deadline:
            assert process.poll() is None, "the worker exited early"
            row = connection.execute(
                "select count(*) from pg_stat_activity"
                " where datname = current_database() and query ilike 'listen%'"
            ).fetchone()
            if row is not None and row[0]:
                return
            time.sleep(0.05)
    pytest.fail("the worker did not start listening in time")


# -- modes ----------------------------------------------------------------------


def test_schema_only_migrates(empty_db_dsn: str) -> None:
    result = run_cli("-c", empty_db_dsn, "--schema-only")
    assert result.returncode == 0, result.stderr
    rows = query(
        empty_db_dsn, "select count(*), max(id) from graphile_worker.migrations"
    )
    assert rows == [(LATEST_MIGRATION, LATEST_MIGRATION)]

    again = run_cli("-c", empty_db_dsn, "--schema-only", "-q")
    assert (again.returncode, again.stderr) == (0, "")


def test_schema_only_keeps_a_schema_name_of_63_bytes(empty_db_dsn: str) -> None:
    schema = "s" * 63
    result = run_cli("-c", empty_db_dsn, "--schema", schema, "--schema-only")
    assert result.returncode == 0, result.stderr
    rows = query(
        empty_db_dsn,
        "select nspname::text from pg_namespace where nspname::text like 's%'",
    )
    assert rows == [(schema,)]


@pytest.mark.parametrize(
    ("schema", "message"),
    [("", "must not be empty"), ("s" * 64, "64 bytes long")],
    ids=["empty", "64-bytes"],
)
def test_a_schema_name_postgresql_would_change_is_a_usage_error(
    empty_db_dsn: str, schema: str, message: str
) -> None:
    # Refused before connecting, so an unreachable server does not matter...
    unreachable = run_cli("-c", BAD_DSN, "--schema", schema, "--schema-only")
    # ...and a reachable one is left untouched.
    reachable = run_cli("-c", empty_db_dsn, "--schema", schema, "--schema-only")

    for result in (unreachable, reachable):
        assert result.returncode == 2
        last = result.stderr.splitlines()[-1]
        assert last.startswith("graphile-worker: error: argument -s/--schema: ")
        assert message in last

    rows = query(
        empty_db_dsn,
        "select count(*) from pg_namespace where nspname::text like 's%'",
    )
    assert rows == [(0,)]


def test_once_runs_the_jobs_of_a_module(db_dsn: str) -> None:
    add_visits(db_dsn, "record_visit", ["ada", "alan", "grace"])
    result = run_cli("-c", db_dsn, "--once", "--tasks", "cli_tasks", "-j", "2")
    assert result.returncode == 0, result.stderr
    assert "record_visit" in result.stderr  # the INFO line naming the tasks
    visits = query(db_dsn, "select name, how from cli_visits order by name")
    assert visits == [("ada", "async"), ("alan", "async"), ("grace", "async")]
    assert query(db_dsn, "select count(*) from graphile_worker.jobs") == [(0,)]


def test_once_threaded_with_an_attribute(db_dsn: str) -> None:
    add_visits(db_dsn, "record_visit_sync", ["edsger", "barbara"])
    result = run_cli(
        "-c",
        db_dsn,
        "--once",
        "--threaded",
        "--tasks",
        "cli_tasks:SYNC_TASKS",
        "--poll-interval",
        "100",
        "--no-prepared-statements",
        "-q",
    )
    assert (result.returncode, result.stderr) == (0, "")
    visits = query(db_dsn, "select name, how from cli_visits order by name")
    assert visits == [("barbara", "threaded"), ("edsger", "threaded")]


def test_cleanup_deletes_permanently_failed_jobs(db_dsn: str) -> None:
    with WorkerUtils(dsn=db_dsn) as utils:
        dead = utils.add_raw_job("record_visit", {"name": "dead"})
        alive = utils.add_raw_job("record_visit", {"name": "alive"})
        utils.permanently_fail_jobs([dead.id], "given up")

    result = run_cli("-c", db_dsn, "--cleanup", "DELETE_PERMAFAILED_JOBS")
    assert result.returncode == 0, result.stderr
    assert query(db_dsn, "select id from graphile_worker.jobs") == [(alive.id,)]


def test_cleanup_keeps_the_tasks_named(db_dsn: str) -> None:
    with WorkerUtils(dsn=db_dsn) as utils:
        job = utils.add_raw_job("record_visit", {"name": "x"}, JobSpec(queue_name="q"))
        utils.complete_jobs([job.id])

    result = run_cli(
        "-c",
        db_dsn,
        "--cleanup",
        "GC_JOB_QUEUES, GC_TASK_IDENTIFIERS",
        "--tasks",
        "cli_tasks:Visit",
    )
    assert result.returncode == 0, result.stderr
    tasks = query(db_dsn, "select identifier from graphile_worker._private_tasks")
    assert tasks == [("record_visit",)]
    assert query(
        db_dsn, "select count(*) from graphile_worker._private_job_queues"
    ) == [(0,)]


# -- errors ---------------------------------------------------------------------


def test_unknown_module_is_a_usage_error() -> None:
    # It fails before connecting: the unreachable DSN would be exit code 1.
    result = run_cli("-c", BAD_DSN, "--once", "--tasks", "no_such_tasks_module")
    assert result.returncode == 2
    line = one_error_line(result)
    assert "'no_such_tasks_module'" in line
    assert "No module named" in line


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("cli_tasks:NO_SUCH_THING", "has no attribute 'NO_SUCH_THING'"),
        ("json", "no tasks found in module 'json'"),
        ("cli_tasks:CREATE_TABLE", "is not a task"),
        ("cli_tasks:", "expected MODULE or MODULE:ATTR"),
    ],
)
def test_bad_task_specs_are_usage_errors(spec: str, expected: str) -> None:
    result = run_cli("-c", BAD_DSN, "--tasks", spec)
    assert result.returncode == 2
    assert expected in one_error_line(result)


def test_a_module_that_fails_to_import(tmp_path: Path) -> None:
    (tmp_path / "broken_tasks.py").write_text("raise RuntimeError('boom at import')\n")
    result = run_cli("-c", BAD_DSN, "--tasks", "broken_tasks", cwd=tmp_path)
    assert result.returncode == 2
    line = one_error_line(result)
    assert "'broken_tasks'" in line
    assert "RuntimeError: boom at import" in line

    verbose = run_cli("-c", BAD_DSN, "--tasks", "broken_tasks", "-v", cwd=tmp_path)
    assert verbose.returncode == 2
    assert "Traceback" in verbose.stderr


def test_no_tasks_is_a_usage_error() -> None:
    result = run_cli("-c", BAD_DSN)
    assert result.returncode == 2
    assert "--tasks" in result.stderr.splitlines()[-1]


@pytest.mark.parametrize(
    "args",
    [
        ["--cleanup", "GC_EVERYTHING"],
        ["--once", "--schema-only"],
        ["--jobs", "0"],
        ["--poll-interval", "fast"],
    ],
)
def test_bad_flags_are_usage_errors(args: list[str]) -> None:
    result = run_cli("-c", BAD_DSN, *args)
    assert result.returncode == 2
    assert "error:" in result.stderr


def test_unreachable_database() -> None:
    result = run_cli("-c", BAD_DSN, "--schema-only")
    assert result.returncode == 1
    line = one_error_line(result)
    assert "cannot connect to the database" in line
    assert "127.0.0.1" in line


def test_malformed_dsn() -> None:
    result = run_cli("-c", "host=127.0.0.1 nonsense", "--schema-only")
    assert result.returncode == 1
    assert "cannot connect to the database" in one_error_line(result)


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("graphile-worker ")


# -- breaking migrations and signals -------------------------------------------


def test_breaking_migration_in_the_schema_exits_57(db_dsn: str) -> None:
    query(
        db_dsn,
        "insert into graphile_worker.migrations (id, breaking) values (21, true)",
    )
    for mode in ("--once", "--schema-only"):
        result = run_cli("-c", db_dsn, mode, "--tasks", "cli_tasks")
        assert result.returncode == EXIT_BREAKING, result.stderr
        assert "breaking migration 21" in one_error_line(result)


@pytest.mark.parametrize("threaded", [False, True], ids=["async", "threaded"])
def test_breaking_migration_while_running_exits_57(
    db_dsn: str,
    worker_process: Callable[..., subprocess.Popen[str]],
    threaded: bool,
) -> None:
    if threaded:
        process = worker_process("--threaded", "--tasks", "cli_tasks:SYNC_TASKS")
    else:
        process = worker_process("--tasks", "cli_tasks")

    wait_listening(db_dsn, process)
    with psycopg.connect(db_dsn) as connection:
        connection.execute(
            "insert into graphile_worker.migrations (id, breaking) values (21, true)"
        )
        connection.execute("select pg_notify('worker:migrate', %s)", [BREAKING_NOTICE])

    assert process.wait(timeout=EXIT_TIMEOUT) == EXIT_BREAKING


@pytest.mark.parametrize("threaded", [False, True], ids=["async", "threaded"])
def test_sigterm_stops_gracefully(
    db_dsn: str,
    worker_process: Callable[..., subprocess.Popen[str]],
    threaded: bool,
) -> None:
    if threaded:
        identifier = "record_visit_sync"
        process = worker_process("--threaded", "--tasks", "cli_tasks:SYNC_TASKS")
    else:
        identifier = "record_visit"
        process = worker_process("--tasks", "cli_tasks")

    wait_listening(db_dsn, process)
    add_visits(db_dsn, identifier, ["hedy"])
    deadline = time.monotonic() + READY_TIMEOUT
    while not query(db_dsn, "select 1 from cli_visits"):
        assert time.monotonic() < deadline, "the job did not run"
        time.sleep(0.05)

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=EXIT_TIMEOUT) == 0


# -- the demo -------------------------------------------------------------------


@pytest.mark.parametrize("threaded", [False, True], ids=["async", "threaded"])
def test_demo(server_dsn: str, dsn_for: Callable[[str], str], threaded: bool) -> None:
    database = f"gw_test_demo_{os.getpid()}_{secrets.token_hex(4)}"
    args = ["demo", "-c", server_dsn, "--database", database, "-j", "4"]
    try:
        result = run_cli(*args, *(["--threaded"] if threaded else []))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "FAILED" not in result.stdout
        for name in (
            "send_welcome_email",
            "greet_user",
            "bank_transfer",
            "flaky_report",
            "index_documents",
        ):
            assert f"\n  {name} " in result.stdout
            assert f"ok      {name}:" in result.stdout

        assert f"dbname={database}" in result.stdout
        users = query(dsn_for(database), "select count(greeting) from demo_users")
        assert users == [(20,)]
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as connection:
            connection.execute(
                sql.SQL("drop database if exists {} with (force)").format(
                    sql.Identifier(database)
                )
            )
