"""The exceptions graphile_worker raises, all under one root.

::

    GraphileWorkerError
    ├── ConfigurationError (ValueError)      options that cannot work together
    ├── InvalidJobError (ValueError)         a job spec or payload rejected before SQL
    ├── CrontabError (ValueError)            a crontab line that does not parse
    ├── PayloadDecodeError (ValueError)      a job's payload does not fit its task
    ├── DatabaseError                        the database refused or failed a query
    │   └── DatabaseConnectionError          the connection is gone; retrying may help
    └── MigrationError                       the schema cannot be brought up to date
        ├── UnsupportedServerError           PostgreSQL is older than version 12
        ├── SchemaTooOldError                a schema older than we can upgrade
        └── SchemaTooNewError                a breaking migration newer than ours

Driver errors are turned into :class:`DatabaseError` in one place
(:mod:`graphile_worker._dberrors`), chained with ``from``.
"""

from __future__ import annotations

from typing import final


class GraphileWorkerError(Exception):
    """Root of every exception raised by graphile_worker."""


@final
class ConfigurationError(GraphileWorkerError, ValueError):
    """Options that are missing, malformed or cannot work together."""


@final
class InvalidJobError(GraphileWorkerError, ValueError):
    """A job spec or payload that was rejected before any SQL ran."""


@final
class CrontabError(GraphileWorkerError, ValueError):
    """A crontab line that does not parse; the message names the line."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message if line is None else f"line {line}: {message}")
        self.line = line


@final
class PayloadDecodeError(GraphileWorkerError, ValueError):
    """A job's payload does not decode into the task's payload type."""


class DatabaseError(GraphileWorkerError):
    """The database refused or failed a query.

    :ivar sqlstate: the five-character SQLSTATE code, when the server sent one.
    """

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@final
class DatabaseConnectionError(DatabaseError):
    """The connection failed or was lost; the operation may succeed if retried."""


class MigrationError(GraphileWorkerError):
    """The graphile_worker schema cannot be brought up to date."""


@final
class UnsupportedServerError(MigrationError):
    """The PostgreSQL server is older than the version 12 we require."""


@final
class SchemaTooOldError(MigrationError):
    """The schema was left by a graphile-worker release we cannot upgrade from."""


@final
class SchemaTooNewError(MigrationError):
    """The schema holds a breaking migration newer than this release knows."""

    def __init__(self, message: str, *, latest: int, latest_breaking: int) -> None:
        super().__init__(message)
        self.latest = latest
        self.latest_breaking = latest_breaking
