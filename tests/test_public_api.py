"""The public surface: ``__all__`` is complete and sorted, and types hold."""

from __future__ import annotations

import inspect
from typing import assert_type

import graphile_worker
from graphile_worker import AsyncWorkerUtils, Job, WorkerUtils


def _sort_key(name: str) -> tuple[int, str]:
    # isort's order by type, as ruff applies it: CONSTANTS, Classes, functions.
    if name.isupper():
        return 0, name

    return (1 if name[0].isupper() else 2), name


def test_all_is_sorted() -> None:
    assert graphile_worker.__all__ == sorted(graphile_worker.__all__, key=_sort_key)


def test_all_names_every_public_object_of_the_package() -> None:
    public = {
        name
        for name, value in vars(graphile_worker).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and name not in {"annotations", "logging"}
    }

    assert public == set(graphile_worker.__all__)


def test_utils_return_types() -> None:
    # Checked by mypy: the blocking twin returns plain values, not awaitables.
    def add(utils: WorkerUtils) -> None:
        assert_type(utils.add_raw_job("t"), Job)
        assert_type(utils.remove_job("k"), Job | None)
        assert_type(utils.migrate(), list[int])

    async def add_async(utils: AsyncWorkerUtils) -> None:
        assert_type(await utils.add_raw_job("t"), Job)
        assert_type(await utils.add_raw_jobs([]), list[Job])

    assert callable(add) and callable(add_async)
