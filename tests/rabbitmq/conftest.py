"""Fixtures for the RabbitMQ adapter's own tests (real server through `amqp_url`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aio_pika
import pytest

import msgkit
from msgkit.errors import BrokerUnavailableError
from msgkit.testing.brokers import unavailable
from msgkit_rabbitmq.local_cluster import LocalRabbitCluster


@pytest.fixture
async def rabbit(amqp_url: str) -> AsyncIterator[msgkit.Broker]:
    async with msgkit.connect(amqp_url) as broker:
        yield broker


QueueState = Callable[[str], Awaitable["tuple[int, int] | None"]]
RedeclareFails = Callable[[str, dict[str, Any]], Awaitable[bool]]


@pytest.fixture
def queue_state(amqp_url: str) -> QueueState:
    return lambda name: _queue_state(amqp_url, name)


@pytest.fixture
def redeclare_fails(amqp_url: str) -> RedeclareFails:
    return lambda name, arguments: _redeclare_fails(amqp_url, name, arguments)


async def _queue_state(amqp_url: str, name: str) -> tuple[int, int] | None:
    """(ready messages, consumers) of queue `name`, or None when it does not exist."""
    connection = await aio_pika.connect(amqp_url, timeout=10)
    try:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return None
        result = queue.declaration_result
        return result.message_count or 0, result.consumer_count or 0
    finally:
        await connection.close()


async def _redeclare_fails(amqp_url: str, name: str, arguments: dict[str, Any]) -> bool:
    """Whether declaring `name` with `arguments` is refused (so the queue has others)."""
    connection = await aio_pika.connect(amqp_url, timeout=10)
    try:
        channel = await connection.channel()
        try:
            await channel.declare_queue(name, durable=True, arguments=arguments)
        except aio_pika.exceptions.ChannelPreconditionFailed:
            return True
        return False
    finally:
        with contextlib.suppress(Exception):
            await connection.close()


@pytest.fixture(scope="session")
def rabbit_cluster() -> Iterator[LocalRabbitCluster]:
    """Three RabbitMQ nodes joined into one cluster on loopback (not the test broker on
    5672), shared by the failover tests; a test that kills a node starts it again."""
    try:
        cluster = LocalRabbitCluster(nodes=3)
    except BrokerUnavailableError as exc:
        unavailable(f"no local three-node RabbitMQ cluster: {exc}")
    yield cluster
    cluster.stop()
