"""The in-memory backend on its own: send to handler, one core (goal: >= 100,000 msg/s).

Each `send` is awaited, one message at a time, as a service publishing events does. The
figure depends on the core being free: the harness reports `cpu_per_wall` (the process's
CPU time over wall time); well under 1.0 means other processes took the core meanwhile.
"""

from __future__ import annotations

from bench.flow import awaited_sends_to_handler
from bench.harness import Case


async def send_to_handler(url: str, n: int) -> float:
    return await awaited_sends_to_handler(url, n)


CASES = [
    Case("memory send->handler", "memory", "", send_to_handler, None, messages=200_000,
         notes="awaited send per message, concurrency 1"),
]
