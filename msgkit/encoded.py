"""Encoding values into messages as a producer sends them, and the ids they get.

`encode_messages` keeps a batch as columns (payloads, keys, headers, ids) and builds each
`Outgoing` when it is read. A pipelined send keeps its batch until the broker confirmed
it; as tuples, each holding its headers dict, ten thousand messages outlived Python's
young GC generation and set off full collections: 0.28 us of a Kafka send's 2.2 us per
message. Bytes, text and dicts of text are never scanned, and a tuple read while
publishing is gone before the next collection.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar, overload

from multidict import MultiDict

from msgkit import headers as h
from msgkit.codec import SendHeaders, check_headers, check_key, encode
from msgkit.message import NO_PROPERTIES, HeaderValue, Key, Outgoing

V = TypeVar("V")

# Ids are unique per process (random prefix) and cheap (a counter): no uuid per message.
# A forked child draws a new prefix, or it would repeat its parent's ids.
_ID_PREFIX = ""
_ID_COUNTER = itertools.count(1)


def _new_id_prefix() -> None:
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX = os.urandom(8).hex()
    _ID_COUNTER = itertools.count(1)


_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)

_new_tuple = tuple.__new__


def new_message_id() -> str:
    """The process's 16 random hex digits, then its counter in decimal (the fastest to
    format: encode_messages builds it inline, the same way)."""
    return _ID_PREFIX + str(next(_ID_COUNTER))


class Encoded(Sequence[Outgoing]):
    """Messages to one topic, encoded, sent at one time: a sequence of `Outgoing` built
    from columns as they are read (see the module's doc for why)."""

    __slots__ = ("headers", "ids", "keys", "payloads", "timestamp", "topic")

    def __init__(self, topic: str, payloads: list[bytes], keys: list[Key | None],
                 headers: list[Any], ids: list[str], timestamp: float) -> None:
        self.topic = topic
        self.payloads = payloads
        self.keys = keys
        self.headers: list[dict[str, HeaderValue] | MultiDict[HeaderValue]] = headers
        self.ids = ids
        """The message ids, in order."""
        self.timestamp = timestamp

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> Outgoing: ...

    @overload
    def __getitem__(self, index: slice) -> list[Outgoing]: ...

    def __getitem__(self, index: int | slice) -> Outgoing | list[Outgoing]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self.ids)))]
        return _new_tuple(Outgoing, (self.topic, self.payloads[index], self.keys[index],
                                     self.headers[index], self.ids[index], self.timestamp,
                                     NO_PROPERTIES))

    def __iter__(self) -> Iterator[Outgoing]:
        topic, stamp = self.topic, self.timestamp
        for payload, key, headers, message_id in zip(self.payloads, self.keys, self.headers,
                                                     self.ids, strict=True):
            # What Outgoing(...) does, without its Python-level __new__ (a third of the cost)
            yield _new_tuple(Outgoing, (topic, payload, key, headers, message_id, stamp,
                                        NO_PROPERTIES))

    def __repr__(self) -> str:
        return f"<Encoded {len(self.ids)} messages to {self.topic!r}>"


def encode_messages(
    topic: str,
    values: Iterable[V],
    key: Callable[[V], Key | None] | None = None,
    headers: SendHeaders | None = None,
    idempotency_key: Callable[[V], str | None] | None = None,
) -> Encoded:
    """`values` as messages to `topic`, encoded as a producer sends them (no broker needed:
    the outbox stores them so). `key` and `idempotency_key` are functions of each value.

    What is the same for the whole batch (checks, user headers, the send time) is done
    once: this loop is most of the cost of a pipelined send."""
    user_headers = check_headers(headers) if headers else None
    now = time.time()
    id_header, type_header, key_header = h.MESSAGE_ID, h.CONTENT_TYPE, h.IDEMPOTENCY_KEY
    id_prefix, next_id = _ID_PREFIX, _ID_COUNTER.__next__
    payloads: list[bytes] = []
    keys: list[Key | None] = []
    all_headers: list[Any] = []
    ids: list[str] = []
    payload: Any
    for value in values:
        k = key(value) if key is not None else None
        if k is not None and type(k) is not str:
            k = check_key(k)
        if type(value) is bytes:
            payload, content_type = value, None
        else:
            payload, content_type = encode(value)
        message_id = id_prefix + str(next_id())  # new_message_id(), inline
        out_headers: Any
        if not user_headers:
            out_headers = {id_header: message_id}
        elif type(user_headers) is dict:
            out_headers = {**user_headers, id_header: message_id}
        else:  # a name repeats: kept in order, as given
            out_headers = MultiDict(user_headers)
            out_headers[id_header] = message_id
        if content_type is not None:
            out_headers[type_header] = content_type
        if idempotency_key is not None:
            ik = idempotency_key(value)
            if ik is not None:
                out_headers[key_header] = ik
        payloads.append(payload)
        keys.append(k)
        all_headers.append(out_headers)
        ids.append(message_id)
    return Encoded(topic, payloads, keys, all_headers, ids, now)
