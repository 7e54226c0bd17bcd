"""`msgkit run module:attribute`: a service's subscribers as a worker process.

The attribute is a `Broker` whose handlers were registered with `@broker.subscriber`, or a
function returning one. The worker starts them, answers `/healthz`, `/readyz` and `/metrics`
on `--port`, and on SIGTERM or SIGINT drains: it takes no new messages, lets the ones in
flight finish within `--drain-timeout` and be acknowledged (then the handlers still
running are cancelled: their messages go back to the broker), closes the broker and exits.

Exit codes, for supervisors: 0 stopped as asked; 1 a consumer or the broker failed (e.g. a
lost connection past its wait, a refused login): restart it; 2 the target cannot be loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator

from msgkit.broker import Broker
from msgkit.errors import ConfigurationError, MsgkitError
from msgkit.health import HealthServer
from msgkit.logs import get_logger

log = get_logger("msgkit.worker")

STOPPED, FAILED, UNLOADABLE = 0, 1, 2


def load(target: str) -> Broker:
    """The `Broker` that `module:attribute` names (calling it when it is a function)."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"run takes module:attribute (e.g. myservice.app:broker), "
                                 f"not {target!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: the service's own directory
    try:
        module = importlib.import_module(module_name)
        found = module
        for name in attribute.split("."):
            if not hasattr(found, name):
                raise ConfigurationError(f"{module_name!r} has no attribute {attribute!r}")
            found = getattr(found, name)
        broker = found() if callable(found) and not isinstance(found, Broker) else found
    except ConfigurationError:
        raise
    except Exception as exc:  # the module or the factory raised: nothing to run
        raise ConfigurationError(f"cannot load {target}: {exc!r}") from exc
    if not isinstance(broker, Broker):
        raise ConfigurationError(f"{target} is a {type(broker).__name__}, not a msgkit Broker "
                                 "(or a function returning one)")
    return broker


class Worker:
    """Runs `broker`'s subscribers until told to stop; `ready` is what `/readyz` says."""

    def __init__(self, broker: Broker, *, port: int | None = None,
                 drain_timeout: float | None = None) -> None:
        self.broker = broker
        self.drain_timeout = drain_timeout
        """Seconds the messages in flight may take on stop (then their handlers are
        cancelled); None: the broker's `stop_timeout` setting."""
        self.error: BaseException | None = None
        """What ended the run when it failed (a consumer's error, a refused start)."""
        self.subscribed = False
        self.draining = False
        self.health = None if port is None else HealthServer(port, self.ready)
        self._stop = asyncio.Event()

    def ready(self) -> bool:
        """Connected, every consumer subscribed and running, not draining."""
        return (self.subscribed and not self.draining and self.broker.backend.connected
                and all(consumer.running for consumer, _ in self.broker._subscribers))

    def stop(self) -> None:
        """Drain and stop (what SIGTERM does); asked again while draining: stop now (the
        messages in flight go back to the broker)."""
        if self._stop.is_set() and self.draining:
            self._cancel_consumers()
        self._stop.set()

    def _cancel_consumers(self) -> None:
        for consumer, _ in self.broker._subscribers:
            task = consumer._task
            if task is not None:
                task.cancel()

    async def run(self) -> int:
        """Returns the exit code."""
        broker = self.broker
        if not broker._subscribers:
            self.error = ConfigurationError(
                "no handlers registered; decorate them with @broker.subscriber")
            return UNLOADABLE
        if self.health is not None:
            await self.health.start()
            log.info("health on port %d: /healthz /readyz /metrics", self.health.port)
        code = STOPPED
        with _on_signals(self.stop):
            try:
                if not await self._started():
                    return STOPPED  # told to stop while starting
                self.subscribed = True
                log.info("worker ready: %d consumer(s) on %s", len(broker._subscribers), broker)
                runs = [asyncio.ensure_future(c.wait()) for c, _ in broker._subscribers]
                told = asyncio.ensure_future(self._stop.wait())
                done, _ = await asyncio.wait([*runs, told], return_when=asyncio.FIRST_COMPLETED)
                told.cancel()
                if told not in done:
                    code = FAILED
                    self.error = next((r.exception() for r in done if r.exception()), None)
                self.draining = True
                await self._drain()
            except Exception as exc:
                self.error = exc
                code = FAILED
            finally:
                self.draining = True
                with contextlib.suppress(Exception):
                    await broker.close()
                if self.health is not None:
                    await self.health.close()
        if self.stuck:
            self.error = MsgkitError(
                f"handlers of {', '.join(self.stuck)} ignored cancellation and still run")
            code = FAILED
        return code

    @property
    def stuck(self) -> list[str]:
        """Topics whose consumer a stop left running: a handler ignored its cancellation."""
        return [consumer.topic for consumer, _ in self.broker._subscribers if consumer.running]

    async def _started(self) -> bool:
        """Connects and subscribes; False when a signal came first (a broker that cannot
        be reached must not make SIGTERM wait for its timeouts)."""
        async def start() -> None:
            await self.broker.start()
            for consumer, handler in self.broker._subscribers:
                await consumer.start(handler)

        starting = asyncio.ensure_future(start())
        told = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait([starting, told], return_when=asyncio.FIRST_COMPLETED)
        told.cancel()
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(BaseException):
                await starting
            return False
        starting.result()  # raises what failed
        return True

    async def _drain(self) -> None:
        await asyncio.gather(*(consumer.stop(self.drain_timeout)
                               for consumer, _ in self.broker._subscribers))


@contextlib.contextmanager
def _on_signals(callback: Callable[[], None]) -> Iterator[None]:
    """`callback` on SIGTERM and SIGINT while inside, where the loop can take signals (the
    main thread of a Unix process); the default handling comes back afterwards."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, callback)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def run(target: str, *, port: int | None, drain_timeout: float | None) -> int:
    """Loads `target` and runs it in this process; returns the exit code."""
    try:
        broker = load(target)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return UNLOADABLE
    worker = Worker(broker, port=port, drain_timeout=drain_timeout)
    with asyncio.Runner() as runner:
        code = runner.run(worker.run())
        if worker.error is not None:
            log.error("the worker failed: %s", worker.error, exc_info=worker.error)
        if worker.stuck:  # closing the loop would wait for those handlers forever
            logging.shutdown()
            os._exit(code)
    return code


def supervise(target: str, *, workers: int, port: int | None, drain_timeout: float | None,
              log_format: str) -> int:
    """Runs `workers` worker processes (ports `port`, `port`+1, ...) and passes SIGTERM and
    SIGINT on to them. When one fails, the others are stopped and its code returned, so the
    supervisor above sees the failure; 0 when all stopped as asked."""
    import subprocess
    import time

    children: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for n in range(workers):
            command = [sys.executable, "-m", "msgkit.cli", "run", target, "--workers", "1",
                       "--log-format", log_format]
            if drain_timeout is not None:
                command += ["--drain-timeout", str(drain_timeout)]
            if port is not None:
                command += ["--port", str(port + n if port else 0)]
            children.append(subprocess.Popen(command))
        failed = 0
        while any(child.poll() is None for child in children):
            code = next((c.returncode for c in children if c.returncode not in (None, 0)), 0)
            if code and not failed:
                failed = code if code > 0 else FAILED  # killed by a signal: failed
                forward(signal.SIGTERM, None)
            time.sleep(0.1)
        codes = [child.returncode for child in children]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    first = next((code for code in codes if code != 0), 0)
    return failed or (first if first >= 0 else FAILED)
