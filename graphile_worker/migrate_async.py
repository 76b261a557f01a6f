"""Bring a graphile_worker schema up to date, with graphile-worker's protocol.

Each step runs in its own transaction that first inserts its ``migrations``
rows: a migrator racing us then hits a unique violation and takes the step as
done, so any number of processes can migrate one database at once.
"""

from __future__ import annotations

import logging
import random

from graphile_worker import _migrations
from graphile_worker._acompat import asleep
from graphile_worker._sql import DEFAULT_SCHEMA, queries
from graphile_worker.database_async import AsyncDatabase
from graphile_worker.errors import DatabaseError, MigrationError

BOOTSTRAP_ATTEMPTS = 5
BOOTSTRAP_BACKOFF = 0.4  # seconds, plus up to half as much again at random

logger = logging.getLogger(__name__)


async def _bootstrap(database: AsyncDatabase, schema: str) -> None:
    sql = queries(schema)
    await database.execute(sql.bootstrap)
    await database.execute(
        sql.mark_breaking, {"ids": sorted(_migrations.BREAKING_MIGRATIONS)}
    )


async def _state(database: AsyncDatabase, schema: str) -> tuple[int | None, int | None]:
    """Return the newest and newest breaking migration, bootstrapping if needed."""
    sql = queries(schema)
    for attempt in range(BOOTSTRAP_ATTEMPTS):
        try:
            row = await database.fetch_one(sql.server_state)
        except DatabaseError as exc:
            if exc.sqlstate not in _migrations.MISSING_CODES:
                raise

        else:
            assert row is not None
            _migrations.check_server_version(row[0])
            return row[1], row[2]

        version = await database.fetch_one("show server_version_num")
        assert version is not None
        _migrations.check_server_version(int(version[0]))
        try:
            await _bootstrap(database, schema)
        except DatabaseError as exc:
            if exc.sqlstate not in _migrations.CLASH_CODES:
                raise

            logger.debug(
                "Another migrator is bootstrapping schema %s (attempt %d)",
                schema,
                attempt + 1,
                extra={"action": "migrate_clash", "schema": schema},
            )
            await asleep(BOOTSTRAP_BACKOFF * (1 + random.random() / 2))

    raise MigrationError(f"could not bootstrap schema {schema!r}: too many clashes")


async def _run_step(
    database: AsyncDatabase, schema: str, step: _migrations.Step
) -> bool:
    """Apply one step; return ``False`` when another migrator applied it first."""
    sql = queries(schema)
    recorded = False
    try:
        async with database.transaction() as transaction:
            await transaction.execute(
                sql.record_migrations,
                {"ids": list(step.ids), "breaking": step.breaking_ids},
            )
            recorded = True
            await transaction.execute(step.sql)
            for message in step.notifications():
                await transaction.execute(sql.notify_migrated, {"message": message})

    except DatabaseError as exc:
        if not recorded and exc.sqlstate in _migrations.CLASH_CODES:
            logger.debug(
                "Migration %06d of schema %s was applied by another migrator",
                step.number,
                schema,
                extra={"action": "migrate_skip", "schema": schema},
            )
            return False

        raise MigrationError(
            f"migration {step.number:06d} of schema {schema!r} failed: {exc}"
        ) from exc

    return True


async def migrate(database: AsyncDatabase, schema: str = DEFAULT_SCHEMA) -> list[int]:
    """Install or upgrade the schema; return the migration ids this call applied.

    :raises ConfigurationError: a schema name PostgreSQL would refuse or
        truncate (checked before any SQL).
    :raises UnsupportedServerError: PostgreSQL is older than 12.
    :raises SchemaTooOldError: the schema predates graphile-worker 0.16.
    :raises SchemaTooNewError: the schema has a breaking migration newer than ours.
    :raises MigrationError: a step failed; the message names it.
    """
    latest, latest_breaking = await _state(database, schema)
    applied: list[int] = []
    for step in _migrations.plan(schema, latest):
        if await _run_step(database, schema, step):
            applied.extend(step.ids)

    if applied:
        logger.info(
            "Migrated schema %s to %d",
            schema,
            _migrations.LATEST_MIGRATION,
            extra={"action": "migrate", "schema": schema, "applied": applied},
        )
        latest = max(latest or 0, applied[-1])

    warning = _migrations.check_not_too_new(schema, latest, latest_breaking)
    if warning is not None:
        logger.warning(
            "%s", warning, extra={"action": "migrate_newer", "schema": schema}
        )

    return applied
