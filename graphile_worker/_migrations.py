"""The migration plan: which steps a schema needs, decided without I/O.

A fresh schema gets one baseline step that records migrations 1 to 18 at once
(the schema graphile-worker 0.16 left), then the numbered steps after it. A
schema that Node's graphile-worker left at 18 or later takes only the steps it
lacks. The runners in ``migrate_async.py`` and ``migrate.py`` do the I/O.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import final

import msgspec

from graphile_worker._sql import substitute
from graphile_worker.errors import (
    SchemaTooNewError,
    SchemaTooOldError,
    UnsupportedServerError,
)

BASELINE_MIGRATION = 18  # the baseline step records migrations 1..18
LATEST_MIGRATION = 20  # the newest migration this release knows
BREAKING_MIGRATIONS = frozenset({1, 3, 11, 13, 14, 16, 19})
MIN_SERVER_VERSION = 120000  # PostgreSQL 12, as server_version_num

# SQLSTATEs: the schema or table is not there yet; someone else created it first.
MISSING_CODES = frozenset({"42P01", "42703", "3F000"})
CLASH_CODES = frozenset({"23505", "42P06", "42P07", "42710"})


@final
class Step(msgspec.Struct, frozen=True):
    """One transaction of the migration: the ids it records and its SQL."""

    number: int
    ids: tuple[int, ...]
    sql: str

    @property
    def breaking_ids(self) -> list[int]:
        """The ids of this step that are breaking migrations."""
        return [number for number in self.ids if number in BREAKING_MIGRATIONS]

    def notifications(self) -> list[str]:
        """The ``worker:migrate`` payloads to send, one per recorded id."""
        return [
            json.dumps(
                {"migrationNumber": number, "breaking": number in BREAKING_MIGRATIONS},
                separators=(",", ":"),
            )
            for number in self.ids
        ]


def migrations_dir() -> Traversable:
    """Find the SQL files: inside the installed package, else in the source tree."""
    packaged = resources.files("graphile_worker").joinpath("migrations")
    if packaged.is_dir():
        return packaged

    return Path(__file__).resolve().parent.parent / "migrations"


@cache
def steps(schema: str) -> tuple[Step, ...]:
    """Every step for ``schema``, in order, with the schema substituted."""
    folder = migrations_dir()
    baseline = folder.joinpath(f"baseline_{BASELINE_MIGRATION:06d}.sql")
    loaded = [
        Step(
            BASELINE_MIGRATION,
            tuple(range(1, BASELINE_MIGRATION + 1)),
            substitute(baseline.read_text(), schema),
        )
    ]
    for number in range(BASELINE_MIGRATION + 1, LATEST_MIGRATION + 1):
        text = folder.joinpath(f"{number:06d}.sql").read_text()
        loaded.append(Step(number, (number,), substitute(text, schema)))

    return tuple(loaded)


def check_server_version(version_num: int) -> None:
    """:raises UnsupportedServerError: the server is older than PostgreSQL 12."""
    if version_num < MIN_SERVER_VERSION:
        raise UnsupportedServerError(
            "graphile_worker needs PostgreSQL 12 or newer; this server reports "
            f"server_version_num {version_num}"
        )


def plan(schema: str, latest: int | None) -> list[Step]:
    """Return the steps a schema whose newest migration is ``latest`` needs.

    :raises SchemaTooOldError: the schema is older than the baseline, which
        only an older graphile-worker release can upgrade.
    """
    if latest is None:
        return list(steps(schema))

    if latest < BASELINE_MIGRATION:
        raise SchemaTooOldError(
            f"schema {schema!r} is at graphile-worker migration {latest}; this "
            f"release upgrades from {BASELINE_MIGRATION} (graphile-worker 0.16) or "
            "later. Run graphile-worker 0.16 or newer (Node) against the database "
            "once to bring it to 18, then start again."
        )

    return [step for step in steps(schema) if step.number > latest]


def check_not_too_new(
    schema: str, latest: int | None, latest_breaking: int | None
) -> str | None:
    """Refuse a schema with a breaking migration newer than ours.

    :returns: a warning when the schema is newer but not in a breaking way.
    :raises SchemaTooNewError: it holds a breaking migration we do not know.
    """
    if latest_breaking is not None and latest_breaking > LATEST_MIGRATION:
        raise SchemaTooNewError(
            f"schema {schema!r} is at migration {latest}, which includes breaking "
            f"migration {latest_breaking}; this release knows migrations up to "
            f"{LATEST_MIGRATION}. It is unsafe to continue: upgrade graphile_worker.",
            latest=latest or latest_breaking,
            latest_breaking=latest_breaking,
        )

    if latest is not None and latest > LATEST_MIGRATION:
        return (
            f"schema {schema!r} is at migration {latest}, newer than the "
            f"{LATEST_MIGRATION} this release knows; it is not marked breaking, "
            "so the worker continues"
        )

    return None
