"""The driver-agnostic ``AsyncDatabase`` protocol and its psycopg 3 implementation.

Everything graphile_worker does with PostgreSQL goes through the handful of
methods below, so another driver only needs to implement them. Queries use
psycopg's ``%s`` / ``%(name)s`` placeholders; rows come back as tuples.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol, final, runtime_checkable

import msgspec
from psycopg import AsyncConnection
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from graphile_worker._dberrors import mapped_errors
from graphile_worker._sql import quote_ident
from graphile_worker.errors import ConfigurationError

Params = Sequence[Any] | Mapping[str, Any] | None
Row = tuple[Any, ...]

CONNECT_TIMEOUT = 10.0  # seconds to wait for a pool connection
POOL_MAX_SIZE = 10  # connections in a pool made from a DSN

logger = logging.getLogger(__name__)


@final
class Notification(msgspec.Struct, frozen=True):
    """A ``NOTIFY`` received on a listening connection."""

    channel: str
    payload: str


@runtime_checkable
class AsyncListener(Protocol):
    """A dedicated connection that has run ``LISTEN`` on some channels."""

    async def wait(self, max_wait: float) -> list[Notification]:
        """Return the notifications that arrive within ``max_wait`` seconds.

        Returns as soon as at least one has arrived; an empty list means the
        time passed in silence.
        """
        ...


@runtime_checkable
class AsyncDatabase(Protocol):
    """What graphile_worker needs from a database driver."""

    async def execute(self, query: str, params: Params = None) -> None:
        """Run a statement and discard any result."""
        ...

    async def fetch(self, query: str, params: Params = None) -> list[Row]:
        """Run a query and return all its rows."""
        ...

    async def fetch_one(self, query: str, params: Params = None) -> Row | None:
        """Run a query and return its first row, or ``None``."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[AsyncDatabase]:
        """Run the block in one transaction on one connection."""
        ...

    def listen(
        self, channels: Sequence[str]
    ) -> AbstractAsyncContextManager[AsyncListener]:
        """Listen on ``channels`` with a connection of its own."""
        ...

    async def close(self) -> None:
        """Release what this object owns; a caller's pool stays open."""
        ...


def _listen_sql(channels: Sequence[str]) -> str:
    return "; ".join(f"LISTEN {quote_ident(name)}" for name in channels)


def _connect_params(pool: AsyncConnectionPool[Any]) -> tuple[str, dict[str, Any]]:
    """The conninfo and keywords to open a connection like the pool's own."""
    conninfo, kwargs = pool.conninfo, pool.kwargs
    plain_kwargs = kwargs is None or isinstance(kwargs, dict)
    if not isinstance(conninfo, str) or not plain_kwargs:
        raise ConfigurationError(
            "graphile_worker opens connections of its own (to listen for "
            "notifications) and needs a pool whose conninfo and kwargs are plain "
            "values, not callables"
        )

    return conninfo, dict(kwargs or {})  # type: ignore[arg-type]


@final
class AsyncPsycopgListener:
    """An :class:`AsyncListener` on a psycopg connection."""

    def __init__(self, connection: AsyncConnection[Any]) -> None:
        self._connection = connection

    async def wait(self, max_wait: float) -> list[Notification]:
        with mapped_errors():
            return [
                Notification(notify.channel, notify.payload)
                async for notify in self._connection.notifies(
                    timeout=max_wait, stop_after=1
                )
            ]


@final
class AsyncPsycopgDatabase:
    """An :class:`AsyncDatabase` on a psycopg pool or a single connection.

    Build it from a DSN with :meth:`from_dsn` (it then owns its pool), or hand
    in your own ``AsyncConnectionPool`` or ``AsyncConnection``. On a connection,
    every statement joins whatever transaction that connection has open.

    :param source: a pool or a connection.
    :param owned: close the pool in :meth:`close`.
    """

    def __init__(
        self,
        source: AsyncConnectionPool[Any] | AsyncConnection[Any],
        *,
        owned: bool = False,
    ) -> None:
        if isinstance(source, AsyncConnectionPool):
            self._pool: AsyncConnectionPool[Any] | None = source
            self._connection: AsyncConnection[Any] | None = None
        elif isinstance(source, AsyncConnection):
            self._pool = None
            self._connection = source
        else:
            raise ConfigurationError(
                "a database needs an AsyncConnectionPool or an AsyncConnection, "
                f"not {type(source).__name__}"
            )

        self._owned = owned

    @classmethod
    def from_dsn(
        cls,
        dsn: str,
        *,
        max_size: int = POOL_MAX_SIZE,
        prepared_statements: bool = True,
    ) -> AsyncPsycopgDatabase:
        """Make a database that owns a pool of autocommit connections to ``dsn``.

        The pool opens in :meth:`open`.

        :param dsn: a libpq connection string or URI.
        :param max_size: the most connections the pool holds.
        :param prepared_statements: prepare frequent statements on the server;
            turn off behind PgBouncer in transaction mode.
        """
        kwargs: dict[str, Any] = {"autocommit": True}
        if not prepared_statements:
            kwargs["prepare_threshold"] = None

        pool = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=max(1, max_size),
            kwargs=kwargs,
            timeout=CONNECT_TIMEOUT,
            open=False,
            name="graphile_worker",
        )
        return cls(pool, owned=True)

    @property
    def pool(self) -> AsyncConnectionPool[Any] | None:
        """The psycopg pool behind this database, if it has one."""
        return self._pool

    @property
    def connection(self) -> AsyncConnection[Any] | None:
        """The single connection behind this database, if it has one."""
        return self._connection

    async def open(self) -> None:
        """Open an owned pool, failing with the server's own words if it cannot.

        :raises DatabaseError: the first connection failed.
        """
        if self._pool is None or not self._owned or not self._pool.closed:
            return

        conninfo, kwargs = _connect_params(self._pool)
        with mapped_errors():
            probe = await AsyncConnection.connect(conninfo, **kwargs)
            await probe.close()
            await self._pool.open(wait=False)

    async def close(self) -> None:
        if self._pool is not None and self._owned:
            await self._pool.close()

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection[Any]]:
        if self._connection is not None:
            yield self._connection
        else:
            assert self._pool is not None
            async with self._pool.connection() as connection:
                yield connection

    async def execute(self, query: str, params: Params = None) -> None:
        with mapped_errors():
            async with self._connect() as connection:
                await connection.execute(query, params)

    async def fetch(self, query: str, params: Params = None) -> list[Row]:
        with mapped_errors():
            async with (
                self._connect() as connection,
                connection.cursor(row_factory=tuple_row, binary=True) as cursor,
            ):
                await cursor.execute(query, params)
                return await cursor.fetchall()

    async def fetch_one(self, query: str, params: Params = None) -> Row | None:
        with mapped_errors():
            async with (
                self._connect() as connection,
                connection.cursor(row_factory=tuple_row, binary=True) as cursor,
            ):
                await cursor.execute(query, params)
                return await cursor.fetchone()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncDatabase]:
        with mapped_errors():
            async with self._connect() as connection, connection.transaction():
                yield AsyncPsycopgDatabase(connection)

    @asynccontextmanager
    async def listen(self, channels: Sequence[str]) -> AsyncIterator[AsyncListener]:
        if self._pool is None:
            raise ConfigurationError(
                "listening for notifications needs a pool or a DSN, "
                "not a single connection"
            )

        conninfo, kwargs = _connect_params(self._pool)
        kwargs["autocommit"] = True
        with mapped_errors():
            connection = await AsyncConnection.connect(conninfo, **kwargs)

        try:
            with mapped_errors():
                await connection.execute(_listen_sql(channels))

            yield AsyncPsycopgListener(connection)
        finally:
            with mapped_errors():
                await connection.close()


def as_database(
    source: AsyncDatabase | AsyncConnectionPool[Any] | AsyncConnection[Any],
) -> AsyncDatabase:
    """Accept a database, a pool or a connection and return a database."""
    if isinstance(source, AsyncConnectionPool | AsyncConnection):
        return AsyncPsycopgDatabase(source)

    if isinstance(source, AsyncDatabase):
        return source

    raise ConfigurationError(
        "expected an AsyncDatabase, AsyncConnectionPool or AsyncConnection, "
        f"not {type(source).__name__}"
    )
