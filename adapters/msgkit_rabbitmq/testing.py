"""The RabbitMQ test broker: `$MSGKIT_TEST_AMQP_URL`, else the local server (started if it
is installed and not running), else a testcontainers RabbitMQ when Docker works.

Tests use their own names; every exchange and queue msgkit declares while a test broker is
started is recorded, and `stop()` (end of the pytest session) deletes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
from collections.abc import Iterable
from typing import Any, ClassVar

from msgkit.errors import BrokerUnavailableError
from msgkit.testing.brokers import TestBroker
from msgkit.testing.system import ensure_installed, port_open, run, wait_port
from msgkit.url import redact
from msgkit_rabbitmq import topology

LOCAL_URL = "amqp://guest:guest@127.0.0.1:5672/"
_LOCAL = ("127.0.0.1", 5672)

_declared: dict[tuple[str, str], None] = {}


def _track(kind: str, name: str) -> None:
    _declared[(kind, name)] = None


def _local_up() -> bool:
    return port_open(*_LOCAL)


async def delete_topology(
    url: str, *, exchanges: Iterable[str] = (), queues: Iterable[str] = ()
) -> None:
    """Deletes queues then exchanges (missing ones are fine), on a connection of its own."""
    import aio_pika

    connection = await aio_pika.connect(url, timeout=10)
    try:
        for kind, names in (("queue", queues), ("exchange", exchanges)):
            for name in names:
                channel = await connection.channel()
                try:
                    if kind == "queue":
                        await channel.queue_delete(name)
                    else:
                        await channel.exchange_delete(name)
                except Exception:
                    pass
                finally:
                    with contextlib.suppress(Exception):
                        await channel.close()
    finally:
        await connection.close()


def cleanup(url: str) -> int:
    """Deletes everything recorded since the test broker started; returns how many names."""
    items = list(_declared)
    _declared.clear()
    if not items:
        return 0
    queues = [n for k, n in items if k == "queue"]
    exchanges = [n for k, n in items if k == "exchange"]
    coro = delete_topology(url, exchanges=exchanges, queues=queues)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
    else:  # called inside a loop: run on a thread of its own
        thread = threading.Thread(target=asyncio.run, args=(coro,))
        thread.start()
        thread.join(120)
    return len(items)


class RabbitMQTestBroker(TestBroker):
    name = "amqp"
    env_var = "MSGKIT_TEST_AMQP_URL"
    _container: ClassVar[Any] = None

    def __init__(self) -> None:
        self._url: str | None = None

    def start(self) -> str:
        url = os.environ.get(self.env_var or "")
        if not url:
            try:
                self.ensure_service()
                url = LOCAL_URL
            except BrokerUnavailableError as local:
                url = self._container_url(str(local))
        self._url = url
        topology.track = _track
        return url

    def stop(self) -> None:
        topology.track = None
        if self._url is not None:
            with contextlib.suppress(Exception):
                cleanup(self._url)
        container, type(self)._container = type(self)._container, None
        if container is not None:
            with contextlib.suppress(Exception):
                container.stop()

    @classmethod
    def ensure_service(cls) -> str:
        if _local_up():
            return "RabbitMQ is running on 127.0.0.1:5672"
        server = ensure_installed("rabbitmq-server", "rabbitmq-server", "RabbitMQ on 127.0.0.1:5672",
                                  cls.env_var or "")
        # A node whose app was stopped (`rabbitmqctl stop_app`) only needs start_app; for a
        # node that is not running this fails within a second or two.
        run("rabbitmqctl", "start_app", timeout=30)
        if not _local_up():
            # Its own session: the node outlives `make brokers` and serves the whole test run.
            subprocess.Popen([server], start_new_session=True, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            run("rabbitmqctl", "await_startup", "--timeout", "90", timeout=100)
        if not wait_port(*_LOCAL, timeout=30):
            raise BrokerUnavailableError(
                "started rabbitmq-server but nothing listens on 127.0.0.1:5672; "
                "see `rabbitmqctl status` and /var/log/rabbitmq"
            )
        return "started the local RabbitMQ server"

    def _container_url(self, why_not_local: str) -> str:
        try:
            from testcontainers.rabbitmq import RabbitMqContainer  # type: ignore[import-not-found]
        except ImportError:
            raise BrokerUnavailableError(
                f"{why_not_local}; testcontainers is not installed either"
            ) from None
        try:
            container = RabbitMqContainer("rabbitmq:3.13-alpine")
            container.start()
        except Exception as exc:
            raise BrokerUnavailableError(
                f"{why_not_local}; and no RabbitMQ container could start ({exc})"
            ) from None
        type(self)._container = container
        host = container.get_container_host_ip()
        port = container.get_exposed_port(5672)
        url = f"amqp://guest:guest@{host}:{port}/"
        print(f"msgkit: RabbitMQ container at {redact(url)}")
        return url
