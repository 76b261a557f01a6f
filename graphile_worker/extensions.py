"""A read-only container of application state, keyed by type.

Register values with ``WorkerOptions.add_extension(value)``; a task reads one
back with ``ctx.get_ext(SomeType)``. A later value of the same type replaces
the earlier one; wrap values in distinct types to keep two of one kind.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, TypeVar, final

T = TypeVar("T")


@final
class Extensions(Mapping[type, Any]):
    """An immutable mapping from a type to the one value stored for it."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[type, Any] | None = None) -> None:
        self._values: dict[type, Any] = dict(values or {})

    def with_value(self, value: object) -> Extensions:
        """Return a copy that also holds ``value`` under its own type."""
        return Extensions({**self._values, type(value): value})

    def get_ext(self, kind: type[T]) -> T | None:
        """Return the value stored for exactly ``kind``, or ``None``."""
        value = self._values.get(kind)
        return value if value is None or isinstance(value, kind) else None

    def __getitem__(self, kind: type) -> Any:
        return self._values[kind]

    def __iter__(self) -> Iterator[type]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        names = ", ".join(kind.__qualname__ for kind in self._values)
        return f"Extensions({names})"
