"""Runs benchmark cases: msgkit and its baseline alternately, several rounds, in one process.

A case is two async functions `(url, n) -> seconds` that move `n` messages; the harness
reports the median throughput of each and their ratio. It is not a test: nothing asserts.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Run = Callable[[str, int], Awaitable[float]]


@dataclass(frozen=True)
class Case:
    name: str
    backend: str
    """Test-broker name whose URL the case gets: memory, kafka, amqp."""
    baseline: str
    """What msgkit is compared with (e.g. 'confluent-kafka'); '' for none."""
    msgkit: Run
    base: Run | None
    messages: int
    rounds: int = 3
    notes: str = ""


@dataclass
class Result:
    case: str
    backend: str
    messages: int
    msgkit_msgs_per_s: float
    baseline: str
    baseline_msgs_per_s: float | None
    ratio: float | None
    rounds: int
    extra: dict[str, Any] = field(default_factory=dict)


class Countdown:
    """A handler that sets `done` once it has been called `n` times."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.done = asyncio.Event()

    async def __call__(self, msg: object) -> None:
        self.count += 1
        if self.count == self.n:
            self.done.set()


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def run_case(case: Case, url: str) -> Result:
    ours: list[float] = []
    theirs: list[float] = []
    for r in range(case.rounds):
        for label, fn, into in (("msgkit", case.msgkit, ours), (case.baseline, case.base, theirs)):
            if fn is None:
                continue
            seconds = await fn(url, case.messages)
            into.append(case.messages / seconds)
            _progress(f"  {case.name} [{case.backend}] round {r + 1}/{case.rounds} "
                      f"{label}: {into[-1]:,.0f} msg/s")
    mine = statistics.median(ours)
    base = statistics.median(theirs) if theirs else None
    return Result(
        case=case.name, backend=case.backend, messages=case.messages,
        msgkit_msgs_per_s=round(mine, 1), baseline=case.baseline,
        baseline_msgs_per_s=round(base, 1) if base else None,
        ratio=round(mine / base, 3) if base else None, rounds=case.rounds,
    )


def run_all(cases: list[Case], urls: dict[str, str]) -> list[Result]:
    results = []
    for i, case in enumerate(cases, 1):
        _progress(f"[{i}/{len(cases)}] {case.name} on {case.backend}")
        results.append(asyncio.run(run_case(case, urls[case.backend])))
    return results
