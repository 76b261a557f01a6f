"""The one place where driver errors become graphile_worker errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import psycopg_pool

from graphile_worker.errors import DatabaseConnectionError, DatabaseError

# SQLSTATE classes and codes after which the same statement may succeed on retry.
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "58"})
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})


def is_transient(sqlstate: str | None) -> bool:
    """Say whether a failure with this SQLSTATE is worth retrying."""
    if sqlstate is None:
        return True

    return sqlstate in TRANSIENT_SQLSTATES or sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES


def translate(exc: BaseException) -> DatabaseError:
    """Turn a psycopg or pool error into ours, keeping its SQLSTATE."""
    if isinstance(exc, psycopg_pool.PoolTimeout | psycopg_pool.PoolClosed):
        return DatabaseConnectionError(f"connection pool: {exc}")

    if isinstance(exc, psycopg.Error):
        sqlstate = exc.sqlstate
        message = str(exc).strip() or type(exc).__name__
        if isinstance(exc, psycopg.OperationalError) and is_transient(sqlstate):
            return DatabaseConnectionError(message, sqlstate=sqlstate)

        if sqlstate is not None and is_transient(sqlstate):
            return DatabaseConnectionError(message, sqlstate=sqlstate)

        return DatabaseError(message, sqlstate=sqlstate)

    return DatabaseError(str(exc))


@contextmanager
def mapped_errors() -> Iterator[None]:
    """Re-raise driver errors raised inside the block as :class:`DatabaseError`."""
    try:
        yield
    except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as exc:
        raise translate(exc) from exc
