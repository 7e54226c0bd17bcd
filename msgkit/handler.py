"""Turns a user's handler into `async (Message) -> None`, decoding typed payloads."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, get_type_hints

from msgkit.errors import HandlerError
from msgkit.message import Message

if TYPE_CHECKING:
    from msgkit.context import Context

Handler = Callable[..., Awaitable[Any]]
"""`async def handler(msg: Message)`, `async def handler(order: Order)` (decoded with
`Message.decode`), and either of them with a second parameter `ctx: msgkit.Context`."""

Bound = Callable[[Message], Awaitable[Any]]


def adapt(handler: Handler, make_context: Callable[[Message], Context]) -> Bound:
    """Checks the handler's shape once, so a bad handler fails at start, not per message."""
    if not inspect.iscoroutinefunction(handler) and not inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - async callable objects
    ):
        raise HandlerError(
            f"handler {getattr(handler, '__qualname__', handler)!r} must be an async function: "
            "write it as `async def handler(msg: msgkit.Message) -> None`"
        )
    params = [
        p for p in inspect.signature(handler).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if not 1 <= len(params) <= 2:
        raise HandlerError(
            f"handler {handler.__qualname__!r} takes {len(params)} positional parameters; "
            "it takes the message, and optionally a msgkit.Context"
        )
    try:
        hints = get_type_hints(handler)
    except Exception:  # unresolvable annotations: treat as untyped
        hints = {}
    model = hints.get(params[0].name, Message)
    decode = model not in (Message, Any, inspect.Parameter.empty)
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
