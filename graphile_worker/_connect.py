"""Choosing the database a utility or worker talks to, for both flavours."""

from __future__ import annotations

import os

from graphile_worker.errors import ConfigurationError


def resolve_dsn(dsn: str | None) -> str:
    """Return ``dsn``, else ``$DATABASE_URL``, else ``""`` (libpq's ``PG*`` vars).

    :raises ConfigurationError: the DSN is not a string.
    """
    if dsn is None:
        return os.environ.get("DATABASE_URL", "")

    if not isinstance(dsn, str):
        raise ConfigurationError(f"dsn must be a string, not {type(dsn).__name__}")

    return dsn


def one_source(**sources: object) -> None:
    """:raises ConfigurationError: more than one way to connect was given."""
    given = sorted(name for name, value in sources.items() if value is not None)
    if len(given) > 1:
        raise ConfigurationError(
            f"give only one of {', '.join(sorted(sources))}; got {', '.join(given)}"
        )
