"""The migration runner, on empty databases: fresh installs, re-runs, quoted
schema names, concurrent migrators, notifications and schema-version checks.

Expected ids and breaking flags are graphile-worker 0.18.0's: migrations 1 to
20, of which those whose SQL file starts with ``--! breaking-change`` are
breaking. The ``worker:migrate`` payload is what graphile-worker's migrator
sends, ``JSON.stringify({migrationNumber, breaking})``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql

from graphile_worker import (
    ConfigurationError,
    MigrationError,
    PsycopgDatabase,
    SchemaTooNewError,
    SchemaTooOldError,
    WorkerUtils,
)
from graphile_worker.migrate import migrate as run_migrations
from tests.wrapped import WrappedDatabase

ALL_MIGRATIONS = list(range(1, 21))
BREAKING = {1, 3, 11, 13, 14, 16, 19}
QUOTED_SCHEMAS = ["my-worker", "GraphileWorker", "select", 'a"b']
MIGRATORS = 10  # processes migrating one database at once
START_DELAY = 2.0  # seconds the migrators wait so that they start together
PROCESS_TIMEOUT = 90  # seconds
NOTIFY_WAIT = 5.0  # seconds

MIGRATOR_CODE = """
import json, sys, time
from graphile_worker import WorkerUtils
dsn, start = sys.argv[1], float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
with WorkerUtils(dsn=dsn) as utils:
    print(json.dumps(utils.migrate()))
"""


def migrate(dsn: str, schema: str = "graphile_worker") -> list[int]:
    with WorkerUtils(dsn=dsn, schema=schema) as utils:
        return utils.migrate()


def migration_rows(dsn: str, schema: str = "graphile_worker") -> list[Any]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            sql.SQL("select id, breaking from {}.migrations order by id").format(
                sql.Identifier(schema)
            )
        ).fetchall()


def run(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement.encode())


def test_fresh_migrate_records_every_migration(empty_db_dsn: str) -> None:
    applied = migrate(empty_db_dsn)

    assert applied == ALL_MIGRATIONS
    assert migration_rows(empty_db_dsn) == [(n, n in BREAKING) for n in ALL_MIGRATIONS]


def test_second_migrate_applies_nothing(empty_db_dsn: str) -> None:
    migrate(empty_db_dsn)
    with psycopg.connect(empty_db_dsn) as conn:
        before = conn.execute(
            "select id, ts from graphile_worker.migrations order by id"
        ).fetchall()

    applied = migrate(empty_db_dsn)

    with psycopg.connect(empty_db_dsn) as conn:
        after = conn.execute(
            "select id, ts from graphile_worker.migrations order by id"
        ).fetchall()
    assert applied == []
    assert after == before


def test_a_missing_last_migration_is_applied_alone(empty_db_dsn: str) -> None:
    migrate(empty_db_dsn)
    run(empty_db_dsn, "delete from graphile_worker.migrations where id = 20")

    applied = migrate(empty_db_dsn)

    assert applied == [20]
    assert [row[0] for row in migration_rows(empty_db_dsn)] == ALL_MIGRATIONS


def test_a_failing_step_is_named_and_leaves_no_trace(empty_db_dsn: str) -> None:
    migrate(empty_db_dsn)
    # Migration 20 replaces add_jobs(job_spec[], boolean): without the type it
    # cannot be created.
    run(
        empty_db_dsn,
        "delete from graphile_worker.migrations where id = 20;"
        " drop type graphile_worker.job_spec cascade",
    )

    with pytest.raises(MigrationError, match="000020"):
        migrate(empty_db_dsn)

    assert [row[0] for row in migration_rows(empty_db_dsn)] == ALL_MIGRATIONS[:-1]


@pytest.mark.parametrize("schema", QUOTED_SCHEMAS)
def test_schema_names_that_need_quoting(empty_db_dsn: str, schema: str) -> None:
    applied = migrate(empty_db_dsn, schema)

    with WorkerUtils(dsn=empty_db_dsn, schema=schema) as utils:
        job = utils.add_raw_job("quoted", {"schema": schema})
        assert [j.id for j in utils.complete_jobs([job.id])] == [job.id]
        again = utils.add_raw_job("quoted", {"schema": schema})

    with psycopg.connect(empty_db_dsn) as conn:
        name = sql.Identifier(schema)
        conn.execute(
            sql.SQL("select {}.add_job('from-sql', '{{}}')").format(name)
        ).fetchall()
        rows = conn.execute(
            sql.SQL(
                "select t.identifier, j.payload::text from {}._private_jobs j"
                " join {}._private_tasks t on t.id = j.task_id order by j.id"
            ).format(name, name)
        ).fetchall()
        schemas = conn.execute(
            "select nspname from pg_namespace where nspname not like 'pg\\_%'"
            " and nspname not in ('public', 'information_schema')"
        ).fetchall()

    assert applied == ALL_MIGRATIONS
    assert migration_rows(empty_db_dsn, schema) == [
        (n, n in BREAKING) for n in ALL_MIGRATIONS
    ]
    assert again.task_identifier == "quoted"
    assert [(r[0], json.loads(r[1])) for r in rows] == [
        ("quoted", {"schema": schema}),
        ("from-sql", {}),
    ]
    assert schemas == [(schema,)]


def test_quoted_schemas_live_side_by_side(empty_db_dsn: str) -> None:
    for schema in QUOTED_SCHEMAS:
        assert migrate(empty_db_dsn, schema) == ALL_MIGRATIONS

    for index, schema in enumerate(QUOTED_SCHEMAS):
        with WorkerUtils(dsn=empty_db_dsn, schema=schema) as utils:
            for n in range(index + 1):
                utils.add_raw_job("t", {"n": n})

    with psycopg.connect(empty_db_dsn) as conn:
        counts = [
            conn.execute(
                sql.SQL("select count(*) from {}._private_jobs").format(
                    sql.Identifier(schema)
                )
            ).fetchone()
            for schema in QUOTED_SCHEMAS
        ]
    assert counts == [(1,), (2,), (3,), (4,)]


# 63 bytes in UTF-8, PostgreSQL's longest identifier, and one byte more.
LONGEST_SCHEMAS = ["s" * 63, "é" * 31 + "s"]
TOO_LONG_SCHEMAS = ["s" * 64, "é" * 32, "é" * 31 + "ss"]


def namespaces(dsn: str) -> list[str]:
    """The names of the schemas in ``dsn`` apart from PostgreSQL's own."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select nspname::text from pg_namespace where nspname not like 'pg\\_%'"
            " and nspname not in ('public', 'information_schema') order by 1"
        ).fetchall()
    return [row[0] for row in rows]


def needs_utf8(dsn: str, schema: str) -> None:
    """Skip when ``schema`` is not ASCII and the server does not count in UTF-8."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("show server_encoding").fetchone()
    if not schema.isascii() and row != ("UTF8",):
        pytest.skip(f"server encoding {row}: identifier bytes are not UTF-8's")


@pytest.mark.parametrize("schema", LONGEST_SCHEMAS, ids=["ascii", "utf8"])
def test_a_schema_name_of_63_bytes_is_kept_whole(
    empty_db_dsn: str, schema: str
) -> None:
    needs_utf8(empty_db_dsn, schema)
    assert len(schema.encode()) == 63

    applied = migrate(empty_db_dsn, schema)
    with WorkerUtils(dsn=empty_db_dsn, schema=schema) as utils:
        job = utils.add_raw_job("long", {"n": 1})

    assert applied == ALL_MIGRATIONS
    assert namespaces(empty_db_dsn) == [schema]
    with psycopg.connect(empty_db_dsn) as conn:
        found = conn.execute(
            sql.SQL("select id from {}.jobs").format(sql.Identifier(schema))
        ).fetchall()
    assert found == [(job.id,)]


@pytest.mark.parametrize("schema", TOO_LONG_SCHEMAS, ids=["ascii", "utf8", "mixed"])
def test_a_schema_name_postgresql_would_truncate_is_refused(
    empty_db_dsn: str, schema: str
) -> None:
    needs_utf8(empty_db_dsn, schema)
    with psycopg.connect(empty_db_dsn) as conn:
        row = conn.execute("select %s::name::text", [schema]).fetchone()
    assert row is not None
    assert row[0] != schema and schema.startswith(row[0])  # PostgreSQL truncates

    with pytest.raises(ConfigurationError, match="is 64 bytes long"):
        migrate(empty_db_dsn, schema)

    statements: list[str] = []
    with psycopg.connect(empty_db_dsn, autocommit=True) as connection:
        database = WrappedDatabase(
            PsycopgDatabase(connection), lambda query, params: statements.append(query)
        )
        with pytest.raises(ConfigurationError, match="63 bytes"):
            run_migrations(database, schema)

    assert statements == []
    assert namespaces(empty_db_dsn) == []


def test_an_empty_schema_name_is_refused(empty_db_dsn: str) -> None:
    with (
        psycopg.connect(empty_db_dsn, autocommit=True) as conn,
        pytest.raises(psycopg.errors.SyntaxError, match="zero-length"),
    ):
        conn.execute('create schema ""')

    with pytest.raises(ConfigurationError, match="must not be empty"):
        migrate(empty_db_dsn, "")

    assert namespaces(empty_db_dsn) == []


def test_concurrent_migrators_apply_each_migration_once(
    empty_db_dsn: str,
) -> None:
    start = time.time() + START_DELAY
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATOR_CODE, empty_db_dsn, repr(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(MIGRATORS)
    ]
    results = [process.communicate(timeout=PROCESS_TIMEOUT) for process in processes]

    failures = [
        (process.returncode, err)
        for process, (_, err) in zip(processes, results, strict=True)
        if process.returncode != 0
    ]
    assert failures == []
    applied = sorted(n for out, _ in results for n in json.loads(out))
    assert applied == ALL_MIGRATIONS  # every step ran in exactly one process
    assert migration_rows(empty_db_dsn) == [(n, n in BREAKING) for n in ALL_MIGRATIONS]


def test_worker_migrate_notifications(empty_db_dsn: str) -> None:
    with psycopg.connect(empty_db_dsn, autocommit=True) as listener:
        listener.execute('listen "worker:migrate"')
        migrate(empty_db_dsn)
        first = list(listener.notifies(timeout=NOTIFY_WAIT, stop_after=20))
        first += list(listener.notifies(timeout=0.3))
        migrate(empty_db_dsn)
        second = list(listener.notifies(timeout=0.3))

    assert {n.channel for n in first} == {"worker:migrate"}
    expected = [
        f'{{"migrationNumber":{n},"breaking":{"true" if n in BREAKING else "false"}}}'
        for n in ALL_MIGRATIONS
    ]
    assert [n.payload for n in first] == expected
    assert second == []


def test_breaking_migration_newer_than_ours_is_refused(empty_db_dsn: str) -> None:
    migrate(empty_db_dsn)
    run(
        empty_db_dsn,
        "insert into graphile_worker.migrations (id, breaking) values (21, true)",
    )

    with pytest.raises(SchemaTooNewError, match="21") as caught:
        migrate(empty_db_dsn)

    assert caught.value.latest == 21
    assert caught.value.latest_breaking == 21


def test_newer_non_breaking_migration_only_warns(
    empty_db_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    migrate(empty_db_dsn)
    run(
        empty_db_dsn,
        "insert into graphile_worker.migrations (id, breaking) values (21, false)",
    )
    caplog.set_level(logging.WARNING, logger="graphile_worker")

    applied = migrate(empty_db_dsn)

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert applied == []
    assert len(warnings) == 1
    assert warnings[0].name.startswith("graphile_worker")
    assert "21" in warnings[0].getMessage()
    assert "20" in warnings[0].getMessage()


def test_schema_older_than_the_baseline_is_refused(empty_db_dsn: str) -> None:
    migrate(empty_db_dsn)
    run(empty_db_dsn, "delete from graphile_worker.migrations where id > 10")

    with pytest.raises(SchemaTooOldError, match=r"\b18\b") as caught:
        migrate(empty_db_dsn)

    assert "10" in str(caught.value)
    assert [row[0] for row in migration_rows(empty_db_dsn)] == list(range(1, 11))
