"""The demo's server and database: starting, recreating, connecting, counting.

Without a DSN the demo runs on the embedded PostgreSQL, started here; on
either server it drops and creates only its own database.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final, LiteralString

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from graphile_worker._sql import DEFAULT_SCHEMA
from graphile_worker.demo.console import out
from graphile_worker.utils import WorkerUtils

DEMO_DATABASE: Final = "graphile_worker_demo"
MAINTENANCE_DB: Final = "postgres"
FORCE_DROP_VERSION: Final = 130000  # server_version_num with DROP ... WITH (FORCE)


@contextmanager
def server(dsn: str | None) -> Iterator[tuple[str, str]]:
    """The server to run on: ``dsn``, else the embedded one, started here.

    :returns: its DSN and a description of where its data lives.
    """
    if dsn:
        yield dsn, "the server of the DSN"
        return

    from graphile_worker.embedded import POSTGRES_VERSION, start_embedded

    out(
        f"Starting the embedded PostgreSQL {POSTGRES_VERSION} "
        "(its first start runs initdb: a few seconds more)"
    )
    started = time.monotonic()
    embedded = start_embedded()
    try:
        out(f"Embedded PostgreSQL ready in {time.monotonic() - started:.1f} s")
        yield embedded.dsn, f"the embedded PostgreSQL, data dir {embedded.data_dir}"
    finally:
        embedded.stop()


def public_dsn(dsn: str) -> str:
    """The DSN without its password, for printing."""
    params = {k: v for k, v in conninfo_to_dict(dsn).items() if k != "password"}
    return make_conninfo("", **params)


def admin_dsn(dsn: str, database: str) -> str:
    """A DSN to create and drop ``database`` from: ``dsn``, unless it names it."""
    if conninfo_to_dict(dsn).get("dbname") == database:
        return make_conninfo(dsn, dbname=MAINTENANCE_DB)

    return dsn


def recreate_database(admin: str, database: str) -> str:
    """Drop ``database`` if it exists and create it afresh.

    :param admin: the DSN of another database on the same server.
    :returns: the DSN of the new database.
    """
    name = sql.Identifier(database)
    with psycopg.connect(admin, autocommit=True) as connection:
        if connection.info.server_version >= FORCE_DROP_VERSION:
            connection.execute(
                sql.SQL("drop database if exists {} with (force)").format(name)
            )
        else:
            connection.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity"
                " where datname = %s and pid <> pg_backend_pid()",
                [database],
            )
            connection.execute(sql.SQL("drop database if exists {}").format(name))

        connection.execute(sql.SQL("create database {}").format(name))

    return make_conninfo(admin, dbname=database)


@contextmanager
def connect(dsn: str) -> Iterator[tuple[psycopg.Connection[Any], WorkerUtils]]:
    """An autocommit connection to ``dsn`` and WorkerUtils on it, closed after."""
    with (
        psycopg.connect(dsn, autocommit=True) as connection,
        WorkerUtils(connection=connection) as utils,
    ):
        yield connection, utils


def jobs_query(query: LiteralString) -> sql.Composed:
    """``query`` with ``{schema}`` naming the schema of the jobs table."""
    return sql.SQL(query).format(schema=sql.Identifier(DEFAULT_SCHEMA))


def count_jobs(connection: psycopg.Connection[Any], where: LiteralString) -> int:
    """The number of jobs matching the SQL condition ``where``."""
    query = jobs_query("select count(*) from {schema}.jobs where " + where)
    row = connection.execute(query).fetchone()
    return int(row[0]) if row is not None else 0


__all__ = [
    "DEMO_DATABASE",
    "admin_dsn",
    "connect",
    "count_jobs",
    "jobs_query",
    "public_dsn",
    "recreate_database",
    "server",
]
