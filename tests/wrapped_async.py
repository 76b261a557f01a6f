"""A database that runs a hook before each statement, then hands it on.

Tests use it to count, delay or fail chosen statements against a real database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from graphile_worker.database_async import AsyncDatabase, AsyncListener, Params, Row


class Hook(Protocol):
    """Called with each statement before it runs; may wait, or raise to fail it."""

    async def __call__(self, query: str, params: Params) -> None: ...


class AsyncWrappedDatabase:
    """Calls ``before(query, params)`` ahead of each statement, then runs it.

    The hook may record the statement, wait, or raise to fail it. Statements in
    a transaction go through the same hook.
    """

    def __init__(self, inner: AsyncDatabase, before: Hook) -> None:
        self.inner = inner
        self.before = before

    async def execute(self, query: str, params: Params = None) -> None:
        await self.before(query, params)
        await self.inner.execute(query, params)

    async def fetch(self, query: str, params: Params = None) -> list[Row]:
        await self.before(query, params)
        return await self.inner.fetch(query, params)

    async def fetch_one(self, query: str, params: Params = None) -> Row | None:
        await self.before(query, params)
        return await self.inner.fetch_one(query, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncDatabase]:
        async with self.inner.transaction() as inner:
            yield AsyncWrappedDatabase(inner, self.before)

    def listen(
        self, channels: Sequence[str]
    ) -> AbstractAsyncContextManager[AsyncListener]:
        return self.inner.listen(channels)

    async def close(self) -> None:
        await self.inner.close()
