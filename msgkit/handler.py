"""Turns a user's handler into `async (Message) -> None`, decoding typed payloads."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, get_args, get_origin, get_type_hints

from msgkit.dispatch import cancelling_now
from msgkit.errors import HandlerAbortedError, HandlerError
from msgkit.message import Message

if TYPE_CHECKING:
    from msgkit.context import Context

Handler = Callable[..., Awaitable[Any]]
"""`async def handler(msg: Message)`, `async def handler(order: Order)` (decoded with
`Message.decode`), and either of them with a second parameter `ctx: msgkit.Context`."""

Bound = Callable[[Message], Awaitable[Any]]
BatchHandler = Callable[[list[Any]], Awaitable[Any]]
"""`async def handler(msgs: list[msgkit.Message])`, or `list[Order]` to get decoded payloads."""
Decode = Callable[[Message], Any]


def adapt(handler: Handler, make_context: Callable[[Message], Context]) -> Bound:
    """Checks the handler's shape once, so a bad handler fails at start, not per message."""
    params = _positional(handler, "msg: msgkit.Message")
    if not 1 <= len(params) <= 2:
        raise HandlerError(
            f"handler {_name(handler)!r} takes {len(params)} positional parameters; "
            "it takes the message, and optionally a msgkit.Context"
        )
    hints = _hints(handler, params[0].name)
    model = hints.get(params[0].name, Message)
    decode = _decodes(model)
    with_context = len(params) == 2

    if not decode and not with_context:
        return handler
    if decode and not with_context:
        async def decoded(msg: Message) -> Any:
            return await handler(msg.decode(model))
        return decoded
    if not decode:
        async def contextual(msg: Message) -> Any:
            return await handler(msg, make_context(msg))
        return contextual

    async def decoded_contextual(msg: Message) -> Any:
        return await handler(msg.decode(model), make_context(msg))
    return decoded_contextual


def failure_of(raised: BaseException) -> Exception:
    """The exception a handler raised, as a failure of its message(s).

    Re-raises what must stop the consumer: its own cancellation (`stop()`, a cancelled
    `run`), KeyboardInterrupt and SystemExit. A handler's own CancelledError or any other
    BaseException becomes a `HandlerAbortedError`: it would otherwise end the worker with
    its message unsettled, and the consumer would wait for that message forever."""
    if isinstance(raised, Exception):
        return raised
    if isinstance(raised, (KeyboardInterrupt, SystemExit)) or (
        isinstance(raised, asyncio.CancelledError) and cancelling_now()
    ):
        raise raised
    detail = f": {raised}" if str(raised) else ""
    return HandlerAbortedError(
        f"the handler raised {type(raised).__name__}{detail} while its consumer was not "
        "being cancelled; handled as a failure of the message")


async def guarded(call: Callable[[], Awaitable[Any]]) -> None:
    """`call()`, raising only `Exception`s or the consumer's own cancellation."""
    try:
        await call()
    except BaseException as raised:
        failure = failure_of(raised)
        if failure is raised:
            raise
        raise failure from raised


def adapt_batch(handler: Handler) -> tuple[BatchHandler, Decode | None]:
    """A batch handler and how each message is decoded for it (None: it takes `Message`s).

    Decoding is per message, so one payload that does not fit fails alone."""
    model = _batch_model(handler)
    if not _decodes(model):
        return handler, None
    return handler, lambda msg: msg.decode(model)


def _batch_model(handler: Handler) -> Any:
    params = _positional(handler, "msgs: list[msgkit.Message]")
    if len(params) != 1:
        raise HandlerError(
            f"batch handler {_name(handler)!r} takes {len(params)} positional parameters; "
            "it takes one: the list of messages"
        )
    hint = _hints(handler, params[0].name).get(params[0].name, list)
    if get_origin(hint) not in (list, Sequence, Iterable) and hint not in (list, Any):
        raise HandlerError(
            f"batch handler {_name(handler)!r} is annotated {hint!r}; a batch handler "
            "takes a list: `msgs: list[msgkit.Message]` or `orders: list[Order]`"
        )
    args = get_args(hint)
    return args[0] if args else Message


def payload_type(handler: Handler, *, batch: bool = False) -> Any:
    """What `handler` decodes each message into (None: it takes `msgkit.Message`s)."""
    if batch:
        model = _batch_model(handler)
    else:
        first = _positional(handler, "msg: msgkit.Message")[0]
        model = _hints(handler, first.name).get(first.name, Message)
    return model if _decodes(model) else None


def _positional(handler: Handler, shape: str) -> list[inspect.Parameter]:
    if not inspect.iscoroutinefunction(handler) and not inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - async callable objects
    ):
        raise HandlerError(
            f"handler {_name(handler)!r} must be an async function: "
            f"write it as `async def handler({shape}) -> None`"
        )
    return [
        p for p in inspect.signature(handler).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def _hints(handler: Handler, message_param: str) -> dict[str, Any]:
    """The handler's resolved annotations. One that cannot be resolved on another parameter
    (`ctx: Context` imported under TYPE_CHECKING) is left out; on the message parameter it
    is an error: the handler would get a raw Message where it expects a model."""
    # an async callable object keeps its annotations on __call__
    target = handler if inspect.isroutine(handler) else getattr(handler, "__call__", handler)  # noqa: B004
    try:
        return get_type_hints(target)
    except Exception as exc:
        raw = getattr(target, "__annotations__", {}).get(message_param)
        if not isinstance(raw, str):
            return {} if raw is None else {message_param: raw}
        try:
            return {message_param: eval(raw, getattr(target, "__globals__", {}))}
        except Exception:
            raise HandlerError(
                f"handler {_name(handler)!r}: the annotation {raw!r} of parameter "
                f"{message_param!r} cannot be resolved ({type(exc).__name__}: {exc}); define "
                "or import it at module level (not only under TYPE_CHECKING), or annotate "
                "the parameter msgkit.Message"
            ) from None


def _name(handler: Handler) -> str:
    return getattr(handler, "__qualname__", type(handler).__qualname__)


def _decodes(model: Any) -> bool:
    return model not in (Message, Any, object, inspect.Parameter.empty)
