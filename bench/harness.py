"""Runs benchmark cases: msgkit and its baseline alternately, several rounds, in one process.

A case is two async functions `(url, n) -> seconds | Sample` that move `n` messages; the
harness reports the median throughput of each, their ratio, and p50/p99 end-to-end latency
when the runs return per-message latencies. It is not a test: nothing asserts.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from msgkit.url import redact


@dataclass
class Sample:
    """What one run measured: its duration, per-message latencies (seconds) where the case
    measures them, and anything else worth reporting (`extra`, copied into the result)."""

    seconds: float
    latencies: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Run = Callable[[str, int], Awaitable[float | Sample]]


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
    warm_up: bool = False
    """Run each side once, unmeasured, before the rounds: for percentiles pooled over all
    rounds, which one run against a cold broker (its JIT, a new group) would set alone."""


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
    msgkit_p50_ms: float | None = None
    msgkit_p99_ms: float | None = None
    baseline_p50_ms: float | None = None
    baseline_p99_ms: float | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Countdown:
    """A handler that sets `done` once it has been called `n` times; `elapsed` is the time
    from its first call to its `n`th (so a group join before the first is not counted)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.first = self.last = 0.0
        self.done = asyncio.Event()

    async def __call__(self, msg: object) -> None:
        self.count += 1
        if self.count == 1:
            self.first = time.perf_counter()
        if self.count == self.n:
            self.last = time.perf_counter()
            self.done.set()

    async def many(self, msgs: Sequence[object]) -> None:
        """The batch-handler form: counts every message of `msgs`."""
        if self.count == 0:
            self.first = time.perf_counter()
        self.count += len(msgs)
        if self.count >= self.n and not self.done.is_set():
            self.last = time.perf_counter()
            self.done.set()

    @property
    def elapsed(self) -> float:
        return self.last - self.first


def percentiles_ms(latencies: list[float]) -> tuple[float, float]:
    """p50 and p99 of latencies in seconds, in milliseconds."""
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return round(cuts[49] * 1000, 3), round(cuts[98] * 1000, 3)


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class _Side:
    """One side's samples across rounds."""

    def __init__(self) -> None:
        self.rates: list[float] = []
        self.cpu: list[float] = []
        self.latencies: list[float] = []
        self.extra: dict[str, Any] = {}

    def add(self, n: int, measured: float | Sample, cpu: float) -> str:
        sample = measured if isinstance(measured, Sample) else Sample(measured)
        self.rates.append(n / sample.seconds)
        self.cpu.append(cpu)
        self.extra.update(sample.extra)
        text = f"{self.rates[-1]:,.0f} msg/s"
        if sample.latencies:
            self.latencies.extend(sample.latencies)
            p50, p99 = percentiles_ms(sample.latencies)
            text += f", p50 {p50:.2f} ms, p99 {p99:.2f} ms"
        return text

    def percentiles(self) -> tuple[float | None, float | None]:
        return percentiles_ms(self.latencies) if len(self.latencies) > 1 else (None, None)


async def run_case(case: Case, url: str) -> Result:
    ours, theirs = _Side(), _Side()
    if case.warm_up:
        for label, fn in (("msgkit", case.msgkit), (case.baseline, case.base)):
            if fn is not None:
                await fn(url, case.messages)
                _progress(f"  {case.name} warm-up {label}: done")
    for r in range(case.rounds):
        for label, fn, side in (("msgkit", case.msgkit, ours), (case.baseline, case.base, theirs)):
            if fn is None:
                continue
            gc.collect()  # garbage of the previous run is not this run's cost
            wall, cpu = time.perf_counter(), time.process_time()
            measured = await fn(url, case.messages)
            # process CPU / wall time of the whole run (setup included): well under 1 on the
            # in-memory backend means other processes took the core (a shared machine)
            share = (time.process_time() - cpu) / (time.perf_counter() - wall)
            text = side.add(case.messages, measured, share)
            _progress(f"  {case.name} round {r + 1}/{case.rounds} {label}: {text}")
    mine = statistics.median(ours.rates)
    base = statistics.median(theirs.rates) if theirs.rates else None
    p50, p99 = ours.percentiles()
    base_p50, base_p99 = theirs.percentiles()
    extra = {**ours.extra, **{f"baseline_{k}": v for k, v in theirs.extra.items()}}
    extra["cpu_per_wall"] = round(statistics.median(ours.cpu), 2)
    if theirs.cpu:
        extra["baseline_cpu_per_wall"] = round(statistics.median(theirs.cpu), 2)
    return Result(
        case=case.name, backend=case.backend, messages=case.messages,
        msgkit_msgs_per_s=round(mine, 1), baseline=case.baseline,
        baseline_msgs_per_s=round(base, 1) if base else None,
        ratio=round(mine / base, 3) if base else None, rounds=case.rounds,
        msgkit_p50_ms=p50, msgkit_p99_ms=p99, baseline_p50_ms=base_p50, baseline_p99_ms=base_p99,
        notes=case.notes, extra=extra,
    )


def run_all(cases: list[Case], urls: dict[str, str]) -> tuple[list[Result], dict[str, str]]:
    """Results of the cases that ran, and the error of each case that failed (the run
    goes on: a store or broker that is down costs its cases, not the whole report)."""
    results = []
    failed: dict[str, str] = {}
    began = time.monotonic()
    for i, case in enumerate(cases, 1):
        _progress(f"[{i}/{len(cases)}] {case.name} on {case.backend} "
                  f"({time.monotonic() - began:,.0f} s elapsed)")
        load = os.getloadavg()[0]
        try:
            result = asyncio.run(run_case(case, urls[case.backend]))
        except Exception as exc:
            failed[case.name] = redact(f"{type(exc).__name__}: {exc}")
            _progress(f"  FAILED {case.name}: {failed[case.name]}")
            continue
        result.extra["load_avg_1min"] = round(load, 2)
        results.append(result)
    _progress(f"done: {len(results)} cases in {time.monotonic() - began:,.0f} s"
              + (f", {len(failed)} failed" if failed else ""))
    return results, failed
