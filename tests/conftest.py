"""The test bed: one PostgreSQL server, a migrated template, a database per test.

The server is named by ``GRAPHILE_WORKER_TEST_DSN``, else ``DATABASE_URL``, else
it is the embedded PostgreSQL 18 (:mod:`graphile_worker.embedded`), started once
per pytest run with ``fsync`` off and stopped at the end. A DSN from the
environment keeps its database name for maintenance work (``postgres`` when it
names none); the test databases are created beside it, so its user needs
``CREATEDB``.

Once per run a template database ``gw_template_<pid>_<random>`` is created and
migrated with :meth:`graphile_worker.WorkerUtils.migrate`; every test asking for
:func:`db_dsn` gets its own clone of it, dropped after the test.

Fixtures:

* ``server_dsn``: maintenance DSN of the server in use (session).
* ``dsn_for``: ``dsn_for(dbname)`` gives a DSN for another database (session).
* ``db_dsn``: DSN of a fresh, migrated database for this test.
* ``empty_db_dsn``: DSN of a fresh database without any schema of ours.
* ``anyio_backend``: ``"asyncio"``, for ``@pytest.mark.anyio`` tests.

Tests marked ``node`` are skipped when ``node`` or ``npm`` is missing.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from graphile_worker import WorkerUtils

ENV_DSN_VARS = ("GRAPHILE_WORKER_TEST_DSN", "DATABASE_URL")  # first one set wins
MAINTENANCE_DB = "postgres"
TEMPLATE_PREFIX = "gw_template_"
TEST_DB_PREFIX = "gw_test_"
FORCE_DROP_VERSION = 130000  # server_version_num from which DROP ... WITH (FORCE)
CONNECT_TIMEOUT = 10  # seconds

logger = logging.getLogger(__name__)


def env_dsn() -> str | None:
    """The test server DSN from the environment, if any.

    :returns: ``$GRAPHILE_WORKER_TEST_DSN``, else ``$DATABASE_URL``, else None.
    """
    for name in ENV_DSN_VARS:
        value = os.environ.get(name)
        if value:
            return value
    return None


def dsn_with_dbname(base: str, dbname: str) -> str:
    """A DSN for another database on the same server as ``base``.

    :param base: any DSN of the server (URI or key/value).
    :param dbname: the database name.
    :returns: a key/value DSN.
    """
    return make_conninfo(base, dbname=dbname)


def _admin_connect(dsn: str) -> psycopg.Connection[tuple[object, ...]]:
    """Open an autocommit connection, as ``CREATE/DROP DATABASE`` need.

    :param dsn: the DSN.
    :returns: the open connection.
    """
    return psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT)


def _new_db_name(prefix: str) -> str:
    """A fresh database name carrying our pid, so stale ones can be told apart.

    :param prefix: :data:`TEMPLATE_PREFIX` or :data:`TEST_DB_PREFIX`.
    :returns: e.g. ``gw_test_1234_9f8e7d6c``.
    """
    return f"{prefix}{os.getpid()}_{secrets.token_hex(4)}"


def _create_db(admin_dsn: str, name: str, template: str) -> None:
    """Create a database from a template.

    :param admin_dsn: maintenance DSN.
    :param name: the new database.
    :param template: the database to copy.
    """
    with _admin_connect(admin_dsn) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )


def _drop_db(admin_dsn: str, name: str) -> None:
    """Drop a database, disconnecting whoever is still in it.

    :param admin_dsn: maintenance DSN.
    :param name: the database.
    """
    with _admin_connect(admin_dsn) as conn:
        if conn.info.server_version >= FORCE_DROP_VERSION:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)
                )
            )
            return

        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def _drop_orphans(admin_dsn: str) -> None:
    """Drop test databases left by killed pytest runs on the embedded server.

    Only for the embedded server: its runs are all on this machine, so a pid in a
    database name that no longer exists means the run is gone.

    :param admin_dsn: maintenance DSN of the embedded server.
    """
    with _admin_connect(admin_dsn) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'gw\\_test\\_%'"
            " OR datname LIKE 'gw\\_template\\_%'"
        ).fetchall()
    for (name,) in rows:
        pid_part = str(name).removeprefix(TEST_DB_PREFIX).removeprefix(TEMPLATE_PREFIX)
        pid = pid_part.split("_", 1)[0]
        if pid.isdigit() and not _pid_exists(int(pid)):
            logger.info("Dropping orphaned test database %s", name)
            _drop_db(admin_dsn, str(name))


def _pid_exists(pid: int) -> bool:
    """Whether a process exists on this machine.

    :param pid: the process id.
    :returns: True if it does.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _migrate(dsn: str) -> None:
    """Install the graphile_worker schema with our own migrator.

    :param dsn: the database to migrate.
    """
    with WorkerUtils(dsn=dsn) as utils:
        utils.migrate()


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """Maintenance DSN of the server the tests use.

    :returns: the environment's DSN (database ``postgres`` if it names none), or
        the embedded server's, started here and stopped after the session.
    """
    configured = env_dsn()
    if configured is not None:
        if "dbname" in conninfo_to_dict(configured):
            yield configured
        else:
            yield dsn_with_dbname(configured, MAINTENANCE_DB)
        return

    from graphile_worker.embedded import start_embedded

    started_at = time.monotonic()
    server = start_embedded(fast=True)
    logger.info("Embedded server up in %.2fs", time.monotonic() - started_at)
    try:
        _drop_orphans(server.dsn)
        yield server.dsn
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dsn_for(server_dsn: str) -> Callable[[str], str]:
    """A function giving the DSN of another database on the server in use.

    :param server_dsn: the server's maintenance DSN.
    :returns: ``dsn_for(dbname) -> dsn``.
    """

    def make(dbname: str) -> str:
        return dsn_with_dbname(server_dsn, dbname)

    return make


@pytest.fixture(scope="session")
def template_db(server_dsn: str) -> Iterator[str]:
    """A database migrated once per session, to clone for each test.

    :param server_dsn: the server's maintenance DSN.
    :returns: the template's name; dropped after the session.
    """
    name = _new_db_name(TEMPLATE_PREFIX)
    _create_db(server_dsn, name, "template0")
    try:
        started_at = time.monotonic()
        _migrate(dsn_with_dbname(server_dsn, name))
        logger.info(
            "Migrated template %s in %.2fs", name, time.monotonic() - started_at
        )

        with _admin_connect(server_dsn) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(
                    sql.Identifier(name)
                )
            )
            lingering = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s",
                [name],
            ).fetchone()
        if lingering is not None and lingering[0]:
            logger.warning("Migration left %s connections open", lingering[0])

        yield name
    finally:
        _drop_db(server_dsn, name)


@pytest.fixture
def db_dsn(server_dsn: str, template_db: str) -> Iterator[str]:
    """DSN of a fresh database with the graphile_worker schema, for one test.

    :param server_dsn: the server's maintenance DSN.
    :param template_db: the migrated template to clone.
    :returns: the DSN; the database is dropped after the test.
    """
    name = _new_db_name(TEST_DB_PREFIX)
    _create_db(server_dsn, name, template_db)
    try:
        yield dsn_with_dbname(server_dsn, name)
    finally:
        _drop_db(server_dsn, name)


@pytest.fixture
def empty_db_dsn(server_dsn: str) -> Iterator[str]:
    """DSN of a fresh database without the graphile_worker schema, for one test.

    :param server_dsn: the server's maintenance DSN.
    :returns: the DSN; the database is dropped after the test.
    """
    name = _new_db_name(TEST_DB_PREFIX)
    _create_db(server_dsn, name, "template0")
    try:
        yield dsn_with_dbname(server_dsn, name)
    finally:
        _drop_db(server_dsn, name)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Run ``@pytest.mark.anyio`` tests on asyncio only.

    :returns: ``"asyncio"``.
    """
    return "asyncio"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip tests marked ``node`` where Node.js or npm is missing.

    :param item: the test about to run.
    """
    if item.get_closest_marker("node") is None:
        return

    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs Node.js and npm; missing: {', '.join(missing)}")
