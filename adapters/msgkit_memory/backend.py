"""`memory://[name][?retention=N]`: a faithful in-process broker for tests and embedded use.

Brokers connected to the same name share topics and groups within the process, so services
running side by side talk to each other. `broker.native` is the `Hub` (faults, topics).
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from msgkit.backend import (
    Backend,
    Capabilities,
    Delivery,
    Publisher,
    Subscription,
    SubscriptionSpec,
)
from msgkit.errors import ConfigurationError, ConsumerLostError, InvalidTopicError, NotFoundError
from msgkit.guarantee import Guarantee
from msgkit.message import Headers, Message, Outgoing
from msgkit_memory.hub import DEFAULT_RETENTION, GroupQueue, Hub, get_hub

_TOPIC = re.compile(r"^[A-Za-z0-9._~-]{1,249}$")
_YIELD_EVERY = 128  # let consumers run while a producer publishes in a tight loop


class MemoryBackend(Backend):
    system = "memory"
    quiet_after = 0.05  # the hub hands over what it holds at once
    capabilities = Capabilities(
        persistent=False,
        ordered_per_key=True,
        consumer_groups=True,
        redelivers_unacked=True,
        replay_from_start=True,
        delayed_redelivery=True,
        repeated_headers=True,
    )

    def __init__(self, url: Any, options: Mapping[str, Any]) -> None:
        super().__init__(url, options)
        name = url.hosts[0][0] if url.hosts else "default"
        try:
            retention = int(self.options.get("retention", DEFAULT_RETENTION))
        except ValueError:
            raise ConfigurationError("memory:// retention must be a whole number of messages") from None
        self.hub: Hub = get_hub(name, retention)

    async def connect(self) -> None:
        return None

    async def lag(self, topic: str, group: str) -> dict[str, int]:
        """The group's queue (`<topic>.<group>`): messages not yet settled; none if the group
        never subscribed."""
        known = self.hub.topics.get(topic)
        queue = known.groups.get(group) if known is not None else None
        return {} if queue is None else {f"{topic}.{group}": queue.waiting()}

    async def close(self) -> None:
        return None

    def validate_topic(self, topic: str) -> None:
        if not _TOPIC.match(topic) or topic in (".", ".."):
            raise InvalidTopicError(
                f"topic or group {topic!r} is invalid: use 1-249 letters, digits, '.', '_' or '-' "
                "(the same rule as Kafka, so code tested here runs there)"
            )

    async def publisher(
        self, guarantee: Guarantee, *, required_groups: Sequence[str] = (), options: Mapping[str, Any]
    ) -> Publisher:
        return MemoryPublisher(self.hub, guarantee, tuple(required_groups))

    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        if spec.existing_only:
            topic = self.hub.topics.get(spec.topic)
            if topic is None or spec.group not in topic.groups:
                raise NotFoundError(f"memory://{self.hub.name} has no topic {spec.topic!r} "
                                    f"with group {spec.group!r} (in this process)")
        group = spec.group or self.hub.private_group()
        queue = self.hub.topic(spec.topic).group(group, spec.start)
        sub = MemorySubscription(self.hub, spec.topic, spec.group, group, queue, spec.prefetch)
        self.hub.subscriptions.add(sub)
        return sub

    @property
    def native(self) -> Hub:
        return self.hub


class MemoryPublisher(Publisher):
    def __init__(self, hub: Hub, guarantee: Guarantee, required_groups: tuple[str, ...]) -> None:
        self._hub = hub
        self._guarantee = guarantee
        self._required = required_groups
        self._known: set[str] = set()
        self._count = 0

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        hub = self._hub
        for out in messages:
            if self._required and out.topic not in self._known:
                topic = hub.topic(out.topic)
                for group in self._required:
                    topic.group(group, "earliest")
                self._known.add(out.topic)
            hub.publish(out)
        self._count += 1
        if self._count % _YIELD_EVERY == 0:
            await asyncio.sleep(0)

    async def publish_to_group(self, group: str, messages: Sequence[Outgoing]) -> None:
        for out in messages:
            self._hub.publish(out, group=group)

    async def close(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"hub": self._hub.name, "guarantee": self._guarantee.value}


class MemoryDelivery(Delivery):
    __slots__ = ("_sub",)

    def __init__(self, message: Message, sub: MemorySubscription) -> None:
        self.message = message
        self._sub = sub

    async def ack(self) -> None:
        self._sub.settle(self)

    def ack_nowait(self) -> bool:
        self._sub.settle(self)
        return True

    async def redeliver(self, *, delay: float = 0.0, headers: Headers) -> None:
        sub = self._sub
        if sub.settle(self):
            sub.hub.redeliver(sub.topic, sub.queue_name, self.message, headers, delay)


class MemorySubscription(Subscription):
    def __init__(
        self, hub: Hub, topic: str, group: str | None, queue_name: str, queue: GroupQueue,
        prefetch: int,
    ) -> None:
        self.hub = hub
        self.topic = topic
        self.group = group
        self.queue_name = queue_name
        self._queue = queue
        self._prefetch = prefetch
        self._unacked: dict[MemoryDelivery, None] = {}  # in fetch order
        self._inbox: deque[Message] = deque()  # pushed by the group, not fetched yet
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._lost = False
        queue.join(self)

    def room(self) -> int:
        """How many more messages the group may push to this member."""
        if self._closed or self._lost:
            return 0
        return self._prefetch - len(self._unacked) - len(self._inbox)

    def holding(self) -> int:
        """Messages the group pushed to this member and it has not settled."""
        return len(self._unacked) + len(self._inbox)

    def push(self, msg: Message) -> None:
        self._inbox.append(msg)
        self._wake()

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        inbox = self._inbox
        while True:
            if self._lost:
                raise ConsumerLostError(f"consumer of {self.topic!r} was dropped (injected fault)")
            if self._closed:
                return ()
            if inbox:
                # Pushed messages stay in the inbox until returned: a cancelled fetch takes none.
                deliveries = [MemoryDelivery(inbox.popleft(), self)
                              for _ in range(min(max_messages, len(inbox)))]
                self._unacked.update(dict.fromkeys(deliveries))
                return deliveries
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def settle(self, delivery: MemoryDelivery) -> bool:
        """Marks a delivery done; False if it was no longer ours (closed or dropped)."""
        if delivery not in self._unacked:
            return False
        del self._unacked[delivery]
        queue = self._queue
        queue.release(delivery.message)
        queue.dispatch()  # this member has room again, and the key's next may be ready
        return True

    def drop(self) -> None:
        self._lost = True
        self._give_back()

    async def close(self) -> None:
        self._closed = True
        self._give_back()
        if self.group is None:
            self.hub.topic(self.topic).groups.pop(self.queue_name, None)

    def _give_back(self) -> None:
        self.hub.subscriptions.discard(self)
        self._queue.leave(self)
        unacked, self._unacked = self._unacked, {}
        again = [replace(d.message, attempt=d.message.attempt + 1) for d in unacked]
        again.extend(self._inbox)  # never handed out: same attempt
        self._inbox.clear()
        if again:
            self._queue.give_back(again)
        self._wake()

    def describe(self) -> dict[str, Any]:
        return {"hub": self.hub.name, "group_queue": self.queue_name, "prefetch": self._prefetch}

