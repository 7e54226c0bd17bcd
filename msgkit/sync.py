"""The blocking API, for code that is not async (Django and Flask views, scripts, Celery
tasks): msgkit's async core runs on an event loop in a background thread this module owns.

    broker = msgkit.sync.connect("kafka://localhost:9092")   # once, at startup
    producer = broker.producer()
    producer.send("orders", {"id": 1}, key="1")              # blocks until confirmed

Guarantees and errors are the async API's: `send` returns once the broker confirmed the
message (at-least-once) or raises the same `PublishError`. A broker and its producers may be
shared by every thread of the process. `close()` (also run at interpreter exit) stops
consumers gracefully, flushes and closes.

Consumers run synchronous handlers in worker threads (`subscribe`, then `run()` blocks until
`close()` or Ctrl-C); the handler's return or exception settles the message as an async
handler's would.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import msgkit
from msgkit.codec import SendHeaders
from msgkit.errors import ClosedError
from msgkit.logs import get_logger
from msgkit.message import Key, Message

if TYPE_CHECKING:
    from msgkit.outbox import Relay
    from msgkit.outbox.relay import Database

log = get_logger("msgkit.sync")
T = TypeVar("T")
V = TypeVar("V")
DEFAULT_TIMEOUT = 120.0
"""How long a blocking call waits before `TimeoutError` (the async call keeps its own
deadlines, e.g. `publish_timeout`; this only bounds the caller's wait)."""


class Broker:
    """A `msgkit.Broker` driven from synchronous code; made by `msgkit.sync.connect`."""

    def __init__(self, url: str | None = None, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="msgkit-sync",
                                        daemon=True)
        self._thread.start()
        self._closed = threading.Event()
        self._stopped = threading.Event()
        self._relays: list[Relay] = []
        try:
            self.broker: msgkit.Broker = self.call(_connected(url, options))
        except BaseException:
            self._stop_loop()
            raise
        atexit.register(self.close)

    def call(self, work: Coroutine[Any, Any, T], timeout: float | None = DEFAULT_TIMEOUT) -> T:
        """Runs `work` on the broker's loop and waits for its result (or exception)."""
        if self._closed.is_set():
            work.close()
            raise ClosedError("this msgkit.sync broker is closed; connect anew")
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        return future.result(timeout)

    def producer(self, **options: Any) -> Producer:
        """A producer (options as `msgkit.Broker.producer`), safe to share between threads."""
        return Producer(self, self.broker.producer(**options))

    def relay(self, db: Database, **options: Any) -> Relay:
        """Starts a transactional-outbox relay publishing what commits to `db`'s outbox
        (`outbox.send_sync(conn, ...)` in the view's transaction); options as
        `msgkit.outbox.Relay`. It stops, finishing its round, when the broker closes."""
        relay: Relay = self.call(_started_relay(db, self.broker, options))
        self._relays.append(relay)
        return relay

    def subscribe(self, topic: str, handler: Callable[[Message], Any], *,
                  group: str | None = None, **consumer_options: Any) -> msgkit.Consumer:
        """Registers a synchronous `handler(message)` for `topic`; it runs in a worker
        thread per message (`concurrency` of them at once). Started by `run()`."""
        async def in_a_thread(msg: Message) -> None:
            await asyncio.to_thread(handler, msg)

        consumer = self.broker.consumer(topic, group=group, **consumer_options)
        self.broker._subscribers.append((consumer, in_a_thread))
        return consumer

    def run(self) -> None:
        """Starts every subscribed handler and blocks until `close()` (from another thread
        or a signal handler) or Ctrl-C; then drains and closes."""
        async def start() -> None:
            for consumer, handler in self.broker._subscribers:
                await consumer.start(handler)

        self.call(start())
        try:
            while not self._closed.wait(0.5):
                if any(not c.running for c, _ in self.broker._subscribers):
                    break  # a consumer stopped by itself: close and say why
            failed = [c for c, _ in self.broker._subscribers if not c.running]
            if failed and not self._closed.is_set():
                self.call(failed[0].wait())  # raises what ended it
        except KeyboardInterrupt:
            pass
        finally:
            self.close()

    def close(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Stops consumers gracefully, closes producers and the connection, ends the
        thread. Safe to call more than once, from any thread."""
        if self._closed.is_set():
            self._stopped.wait(timeout)
            return
        self._closed.set()
        try:
            asyncio.run_coroutine_threadsafe(self._shut_down(), self._loop).result(timeout)
        finally:
            self._stop_loop()
            atexit.unregister(self.close)

    async def _shut_down(self) -> None:
        try:
            for relay in self._relays:  # before the broker they publish through
                try:
                    await relay.stop()
                except Exception:  # it already logged why it failed; close the rest
                    log.exception("outbox relay %r failed", relay)
        finally:
            await self.broker.close()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._stopped.set()

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<msgkit.sync.Broker {self.broker.url}>"


class Producer:
    """Blocking `send` and `send_many`; any thread may call them."""

    def __init__(self, broker: Broker, producer: msgkit.Producer) -> None:
        self._broker = broker
        self.producer = producer

    def send(self, topic: str, value: object, *, key: Key | None = None,
             headers: SendHeaders | None = None, idempotency_key: str | None = None,
             timeout: float | None = DEFAULT_TIMEOUT) -> str:
        """As `msgkit.Producer.send`: returns the message id once the guarantee is met."""
        return self._run(self.producer.send(topic, value, key=key, headers=headers,
                                            idempotency_key=idempotency_key), timeout)

    def send_many(self, topic: str, values: Iterable[V], *,
                  key: Callable[[V], Key | None] | None = None,
                  headers: SendHeaders | None = None,
                  idempotency_key: Callable[[V], str | None] | None = None,
                  timeout: float | None = DEFAULT_TIMEOUT) -> list[str]:
        """As `msgkit.Producer.send_many`."""
        return self._run(self.producer.send_many(topic, list(values), key=key, headers=headers,
                                                 idempotency_key=idempotency_key), timeout)

    def _run(self, work: Coroutine[Any, Any, T], timeout: float | None) -> T:
        return self._broker.call(work, timeout)


async def _started_relay(db: Database, broker: msgkit.Broker, options: dict[str, Any]) -> Relay:
    from msgkit.outbox import Relay

    relay = Relay(db, broker, **options)
    await relay.start()
    return relay


async def _connected(url: str | None, options: dict[str, Any]) -> msgkit.Broker:
    return await msgkit.connect(url, **options).start()


def connect(url: str | None = None, **options: Any) -> Broker:
    """A blocking broker for `url` (as `msgkit.connect`), connected before it returns."""
    return Broker(url, **options)
