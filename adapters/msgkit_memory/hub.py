"""The in-process broker: topics keep a bounded log; each group has a queue of its own.

A group never hands out a message while an earlier one with the same key is unsettled,
so per-key order holds across competing consumers (as Kafka's partitions give it). As
RabbitMQ does, a group pushes its messages to its members one at a time in turn, each while
it has room under its prefetch, so competing consumers share the load evenly.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING

from multidict import MultiDict

from msgkit import headers as h
from msgkit.backend import StartFrom
from msgkit.errors import PublishError
from msgkit.message import Headers, Key, Message, Outgoing, text_of

if TYPE_CHECKING:
    from msgkit_memory.backend import MemorySubscription

DEFAULT_RETENTION = 10_000

_hubs: dict[str, Hub] = {}


def get_hub(name: str, retention: int = DEFAULT_RETENTION) -> Hub:
    """The hub called `name` in this process; `memory://name` URLs share it."""
    hub = _hubs.get(name)
    if hub is None:
        hub = _hubs[name] = Hub(name, retention)
    return hub


class GroupQueue:
    """Messages waiting for one group, its members, and the keys whose earlier message is
    still out."""

    def __init__(self) -> None:
        self.ready: deque[Message] = deque()
        self.chains: dict[Key, deque[Message]] = {}
        self.members: deque[MemorySubscription] = deque()

    def put(self, msg: Message) -> None:
        key = msg.key
        if key is not None:
            chain = self.chains.get(key)
            if chain is not None:
                chain.append(msg)
                return
            self.chains[key] = deque()
        self.ready.append(msg)
        self.dispatch()

    def give_back(self, msgs: list[Message]) -> None:
        """Unsettled messages of a closed or dropped subscription go first in line again.
        Their keys are still held, so later messages of those keys keep waiting behind them."""
        self.ready.extendleft(reversed(msgs))
        self.dispatch()

    def join(self, member: MemorySubscription) -> None:
        self.members.append(member)
        self.dispatch()

    def leave(self, member: MemorySubscription) -> None:
        if member in self.members:
            self.members.remove(member)

    def waiting(self) -> int:
        """Messages of this group not yet settled: queued, behind an earlier one of their
        key, or out with a member."""
        queued = len(self.ready) + sum(len(chain) for chain in self.chains.values())
        return queued + sum(member.holding() for member in self.members)

    def dispatch(self) -> None:
        """Hand ready messages out one at a time, to the members in turn, while any has room."""
        ready, members = self.ready, self.members
        full = 0
        while ready and full < len(members):
            member = members[0]
            members.rotate(-1)
            if member.room() > 0:
                member.push(ready.popleft())
                full = 0
            else:
                full += 1

    def release(self, msg: Message) -> None:
        """`msg` is settled: the next message of its key may go out."""
        key = msg.key
        if key is None:
            return
        chain = self.chains.get(key)
        if chain is None:
            return
        if chain:
            self.ready.append(chain.popleft())
        else:
            del self.chains[key]


class Topic:
    def __init__(self, name: str, retention: int) -> None:
        self.name = name
        self.log: deque[Message] = deque(maxlen=retention)
        self.groups: dict[str, GroupQueue] = {}

    def append(self, msg: Message) -> None:
        self.log.append(msg)
        for group in self.groups.values():
            group.put(msg)

    def group(self, name: str, start: StartFrom = "latest") -> GroupQueue:
        queue = self.groups.get(name)
        if queue is None:
            queue = self.groups[name] = GroupQueue()
            if start == "earliest":
                for msg in self.log:
                    queue.put(msg)
        return queue


class Faults:
    """Fault injection for tests of services built on msgkit.

    `fail_next_publishes(n)`: the next n published messages raise `PublishError`.
    `delay_deliveries(s)`: published messages reach groups s seconds later.
    `drop_consumers(topic, group)`: those consumers die as if their process crashed; their
    unacknowledged messages go to the other members of the group.
    """

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self.failing_publishes = 0
        self.delivery_delay = 0.0

    def fail_next_publishes(self, n: int = 1) -> None:
        self.failing_publishes = n

    def delay_deliveries(self, seconds: float) -> None:
        self.delivery_delay = seconds

    def drop_consumers(self, topic: str, group: str | None = None) -> int:
        """Drops every consumer of `topic` (in `group`, if given); returns how many."""
        dropped = 0
        for sub in list(self._hub.subscriptions):
            if sub.topic == topic and (group is None or sub.group == group):
                sub.drop()
                dropped += 1
        return dropped

    def clear(self) -> None:
        self.failing_publishes = 0
        self.delivery_delay = 0.0


class Hub:
    def __init__(self, name: str, retention: int) -> None:
        self.name = name
        self.retention = retention
        self.topics: dict[str, Topic] = {}
        self.faults = Faults(self)
        self.subscriptions: set[MemorySubscription] = set()
        self._private = itertools.count(1)

    def topic(self, name: str) -> Topic:
        topic = self.topics.get(name)
        if topic is None:
            topic = self.topics[name] = Topic(name, self.retention)
        return topic

    def private_group(self) -> str:
        return f"~private-{next(self._private)}"

    def publish(self, out: Outgoing, group: str | None = None) -> None:
        """To every group of the topic, or to `group` only."""
        faults = self.faults
        if faults.failing_publishes:
            faults.failing_publishes -= 1
            raise PublishError(f"publish to {out.topic!r} failed", reason="injected fault")
        headers = out.headers
        if h.ATTEMPT in headers:  # a copy that already failed elsewhere (replay, dead letter)
            msg = Message.from_wire(out.topic, out.value, out.key, MultiDict(headers),
                                    timestamp=out.timestamp, fallback_id=out.id,
                                    properties=out.properties)
        else:
            msg = Message(out.topic, out.value, out.key, headers, out.id,
                          text_of(headers.get(h.IDEMPOTENCY_KEY)), 1, out.timestamp,
                          out.properties)
        topic = self.topics.get(out.topic) or self.topic(out.topic)
        deliver = topic.append if group is None else topic.group(group).put
        if faults.delivery_delay:
            asyncio.get_running_loop().call_later(faults.delivery_delay, deliver, msg)
        else:
            deliver(msg)

    def redeliver(self, topic: str, group: str, msg: Message, headers: Headers,
                  delay: float) -> None:
        again = replace(msg, headers=MultiDict(headers), attempt=msg.attempt + 1,
                        idempotency_key=text_of(headers.get(h.IDEMPOTENCY_KEY)))
        queue = self.topic(topic).group(group)
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, queue.put, again)
        else:
            queue.put(again)
