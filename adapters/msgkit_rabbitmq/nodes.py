"""Several RabbitMQ nodes in one URL: `amqp://user:pw@h1:5672,h2:5673,h3:5674/vhost`.

aio-pika's robust connection reconnects to the one URL it was given. `NodesConnection` gives
it a different node for each connection attempt, in turn, so a connection lost with its
node comes back on the next node that answers; channels, consumers and queues are restored
there as after a restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yarl
from aio_pika import RobustConnection

from msgkit.url import URL


def per_node(url: URL) -> list[str]:
    """`url` once per host it lists, each naming that host alone (aio-pika's URLs have one)."""
    if len(url.hosts) <= 1:
        return [url.raw]
    scheme, _, rest = url.raw.partition("://")
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    userinfo, at, _ = netloc.rpartition("@")
    return [f"{scheme}://{userinfo}{at}{_host(host, port)}{rest[len(netloc):]}"
            for host, port in url.hosts]


def _host(host: str, port: int | None) -> str:
    name = f"[{host}]" if ":" in host else host
    return name if port is None else f"{name}:{port}"


class NodesConnection(RobustConnection):
    """A robust connection whose every connection attempt goes to the next node in turn."""

    def __init__(self, urls: Sequence[str | yarl.URL], shown: str, **kwargs: Any) -> None:
        self._nodes = [yarl.URL(u) for u in urls]
        self._turn = 0
        self._shown = shown
        super().__init__(self._nodes[0], **kwargs)
        self._turn = 0  # the constructor's own read of `url` is no attempt

    @property
    def url(self) -> yarl.URL:
        # aio-pika reads it once per connection attempt (and in its constructor).
        node = self._nodes[self._turn % len(self._nodes)]
        self._turn += 1
        self.node = node
        return node

    @url.setter
    def url(self, value: yarl.URL) -> None:
        # Set by aio-pika's constructor and by `update_secret` (a new password for all).
        if getattr(self, "_nodes", None) and value.password != self._nodes[0].password:
            self._nodes = [n.with_password(value.password) for n in self._nodes]

    def __str__(self) -> str:
        return self._shown

    node: yarl.URL | None = None
    """The node of the latest connection attempt."""
