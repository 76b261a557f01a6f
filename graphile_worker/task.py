"""Task handlers: what a worker runs for each task identifier.

Three forms, for both workers:

- a msgspec Struct with a class-level ``IDENTIFIER`` and a ``run(self, ctx)``
  method: the payload decodes into the Struct, then ``run`` is called;
- a plain function registered with :func:`task`, whose first parameter's
  annotation (or ``payload=``) names the payload type;
- a batch function, :func:`task` with ``batch=True``, taking a list of payloads
  and returning one outcome per item, so only the failed items are retried.

``async def`` handlers suit the async worker (which runs blocking ones in a
thread); the threaded worker takes only blocking ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, final, get_type_hints, overload

import msgspec

from graphile_worker._jobspec import check_identifier
from graphile_worker.errors import ConfigurationError, PayloadDecodeError

F = TypeVar("F", bound=Callable[..., Any])

# What a batch handler returns: one entry per item, None for success.
BatchOutcome = Sequence[BaseException | None] | None


@final
class TaskHandler:
    """A registered handler: its identifier, payload decoder and callable.

    :ivar identifier: the task identifier jobs name.
    :ivar payload_type: the type payloads decode into (``Any`` for raw JSON).
    :ivar batch: the payload is a list and the handler reports per item.
    :ivar is_async: the callable returns an awaitable.
    """

    __slots__ = ("batch", "call", "decoder", "identifier", "is_async", "payload_type")

    def __init__(
        self,
        identifier: str,
        call: Callable[[Any, Any], Any],
        *,
        payload_type: Any = Any,
        batch: bool = False,
        is_async: bool | None = None,
    ) -> None:
        self.identifier = check_identifier(identifier)
        self.call = call
        self.payload_type = payload_type
        self.batch = batch
        self.is_async = (
            inspect.iscoroutinefunction(call) if is_async is None else is_async
        )
        decoded: Any = list[payload_type] if batch else payload_type
        try:
            self.decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(decoded)
        except TypeError as exc:
            raise ConfigurationError(
                f"task {identifier!r}: msgspec cannot decode into "
                f"{payload_type!r}: {exc}"
            ) from exc

    def decode(self, payload: str | bytes) -> Any:
        """Decode a job's JSON payload for this handler.

        :raises PayloadDecodeError: the payload does not fit the payload type;
            the message names the offending field.
        """
        try:
            return self.decoder.decode(payload)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise PayloadDecodeError(
                f"payload of task {self.identifier!r} does not decode into "
                f"{_type_name(self.payload_type, self.batch)}: {exc}"
            ) from exc

    def __repr__(self) -> str:
        kind = "batch " if self.batch else ""
        return f"<{kind}task {self.identifier!r} -> {self.call!r}>"


def _type_name(payload_type: Any, batch: bool) -> str:
    name = getattr(payload_type, "__qualname__", None) or repr(payload_type)
    return f"list[{name}]" if batch else name


def _payload_annotation(function: Callable[..., Any]) -> Any:
    parameters = list(inspect.signature(function).parameters.values())
    if not parameters:
        raise ConfigurationError(
            f"task function {function.__qualname__} must take (payload, ctx)"
        )

    try:
        hints = get_type_hints(function)
    except Exception:  # an unresolvable annotation: treat the payload as raw
        hints = {}

    return hints.get(parameters[0].name, Any)


def _element_type(annotation: Any, function: Callable[..., Any]) -> Any:
    origin = getattr(annotation, "__origin__", None)
    if origin in (list, Sequence, tuple) and getattr(annotation, "__args__", None):
        return annotation.__args__[0]

    if annotation is Any:
        return Any

    raise ConfigurationError(
        f"batch task {function.__qualname__} must annotate its payload as a list, "
        f"not {annotation!r}"
    )


@overload
def task(function: F, /) -> TaskHandler: ...


@overload
def task(
    identifier: str | None = None,
    /,
    *,
    payload: Any = None,
    batch: bool = False,
) -> Callable[[F], TaskHandler]: ...


def task(
    identifier: str | F | None = None,
    /,
    *,
    payload: Any = None,
    batch: bool = False,
) -> TaskHandler | Callable[[F], TaskHandler]:
    """Register a function as a task handler.

    Use it bare (``@task``) or with arguments (``@task("send_email")``). The
    identifier defaults to the payload type's ``IDENTIFIER``, else the
    function's name. The payload type comes from ``payload=`` or from the first
    parameter's annotation; without either, the handler gets the raw JSON value.

    :param identifier: the task identifier.
    :param payload: the type to decode payloads into (the item type for a batch).
    :param batch: the payload is a list; the handler returns a sequence with one
        entry per item, ``None`` for success or an exception for failure (or
        ``None`` for all succeeded), and only the failed items are retried.
    """
    if callable(identifier):
        return _make(identifier, None, payload=payload, batch=batch)

    def register(function: F) -> TaskHandler:
        return _make(function, identifier, payload=payload, batch=batch)

    return register


def _make(
    function: Callable[..., Any],
    identifier: str | None,
    *,
    payload: Any,
    batch: bool,
) -> TaskHandler:
    payload_type = payload
    if payload_type is None:
        annotation = _payload_annotation(function)
        payload_type = _element_type(annotation, function) if batch else annotation

    if identifier is None:
        identifier = getattr(payload_type, "IDENTIFIER", None) or function.__name__

    return TaskHandler(identifier, function, payload_type=payload_type, batch=batch)


def _run_struct(payload: Any, ctx: Any) -> Any:
    return payload.run(ctx)


def handler_of(definition: object) -> TaskHandler:
    """Turn a task definition into a :class:`TaskHandler`.

    :param definition: a :class:`TaskHandler`, or a Struct type with an
        ``IDENTIFIER`` and a ``run(self, ctx)`` method.
    :raises ConfigurationError: anything else.
    """
    if isinstance(definition, TaskHandler):
        return definition

    if isinstance(definition, type) and issubclass(definition, msgspec.Struct):
        identifier = getattr(definition, "IDENTIFIER", None)
        run = getattr(definition, "run", None)
        if not isinstance(identifier, str) or run is None:
            raise ConfigurationError(
                f"{definition.__qualname__} needs a class-level IDENTIFIER string "
                "and a run(self, ctx) method to be a task"
            )

        return TaskHandler(
            identifier,
            _run_struct,
            payload_type=definition,
            is_async=inspect.iscoroutinefunction(run),
        )

    raise ConfigurationError(
        f"{definition!r} is not a task: use a Struct with IDENTIFIER and run(), "
        "or a function decorated with @task"
    )


def batch_failures(
    items: Sequence[Any], outcome: BatchOutcome
) -> tuple[list[Any], list[BaseException]]:
    """Pick the failed items of a batch and their errors from its outcome.

    :raises ValueError: the outcome does not have one entry per item.
    """
    if outcome is None:
        return [], []

    if isinstance(outcome, str | bytes) or len(outcome) != len(items):
        raise ValueError(
            f"a batch handler must return one outcome per item ({len(items)}), "
            f"got {outcome!r:.80}"
        )

    failed = [item for item, result in zip(items, outcome, strict=True) if result]
    errors = [result for result in outcome if isinstance(result, BaseException)]
    return failed, errors
