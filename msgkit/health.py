"""The worker's HTTP port: `/healthz` (the process answers), `/readyz` (connected, every
consumer subscribed and running, not draining) and `/metrics` (Prometheus' default
registry, with `msgkit[prometheus]`). A few lines of asyncio: no web framework needed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

_REASONS = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}


class HealthServer:
    """Answers on `port` (0: a free one, see `port` after `start`) while the worker runs."""

    def __init__(self, port: int, ready: Callable[[], bool], host: str = "0.0.0.0") -> None:
        self._host = host
        self.port = port
        self._ready = ready
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._answer, self._host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass  # headers: nothing here needs them
            parts = request.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) > 1 else "/"
            status, content_type, body = self._route(path)
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def _route(self, path: str) -> tuple[int, str, bytes]:
        text = "text/plain; charset=utf-8"
        if path == "/healthz":
            return 200, text, b"ok\n"
        if path == "/readyz":
            return (200, text, b"ready\n") if self._ready() else (503, text, b"not ready\n")
        if path == "/metrics":
            try:
                from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
            except ImportError:
                return 404, text, b"install msgkit[prometheus] for /metrics\n"
            return 200, CONTENT_TYPE_LATEST, generate_latest()
        return 404, text, b"try /healthz, /readyz or /metrics\n"
