"""Checks that the test bed hands out what its fixtures promise."""

from __future__ import annotations

import logging
from collections.abc import Callable

import psycopg
import pytest

from tests.conftest import env_dsn

SEEN_DATABASES: list[str] = []  # database names handed to earlier cases

logger = logging.getLogger(__name__)


@pytest.mark.parametrize("case", [1, 2])
def test_each_test_gets_its_own_empty_migrated_database(db_dsn: str, case: int) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        name_row = conn.execute("select current_database()").fetchone()
        jobs_row = conn.execute("select count(*) from graphile_worker.jobs").fetchone()
        marker_row = conn.execute(
            "select to_regclass('public.testbed_marker')"
        ).fetchone()

        conn.execute("create table testbed_marker ()")
        conn.execute("select graphile_worker.add_job('testbed', '{}'::json)")

    assert name_row is not None
    assert name_row[0] not in SEEN_DATABASES, f"case {case} reused a database"
    SEEN_DATABASES.append(name_row[0])
    assert jobs_row == (0,)
    assert marker_row == (None,)


def test_empty_db_has_no_graphile_worker_schema(empty_db_dsn: str) -> None:
    with psycopg.connect(empty_db_dsn) as conn:
        row = conn.execute(
            "select count(*) from pg_namespace where nspname = 'graphile_worker'"
        ).fetchone()

    assert row == (0,)


def test_dsn_for_reaches_another_database(
    db_dsn: str, dsn_for: Callable[[str], str]
) -> None:
    with psycopg.connect(db_dsn) as conn:
        name_row = conn.execute("select current_database()").fetchone()
    assert name_row is not None

    with psycopg.connect(dsn_for(name_row[0])) as conn:
        other_row = conn.execute("select current_database()").fetchone()

    assert other_row == name_row


def test_databases_are_dropped_after_use(server_dsn: str) -> None:
    """The databases of the cases above are gone; only ours may be left."""
    with psycopg.connect(server_dsn) as conn:
        rows = conn.execute(
            "select datname from pg_database where datname = any(%s)",
            [SEEN_DATABASES],
        ).fetchall()

    assert rows == []


@pytest.mark.skipif(env_dsn() is not None, reason="a server DSN is set in the env")
def test_embedded_server_is_postgresql_18(server_dsn: str) -> None:
    with psycopg.connect(server_dsn) as conn:
        row = conn.execute("select version(), current_setting('fsync')").fetchone()

    assert row is not None
    assert str(row[0]).startswith("PostgreSQL 18")
    assert row[1] == "off"


@pytest.mark.anyio
async def test_async_connection_to_a_cloned_database(db_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(db_dsn) as conn:
        cursor = await conn.execute("select count(*) from graphile_worker.jobs")
        row = await cursor.fetchone()

    assert row == (0,)
