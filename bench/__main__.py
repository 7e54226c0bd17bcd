"""`make bench`: every case in `bench/cases/`, against the brokers the test suite uses.

Writes bench/results.json, bench/results.md and bench/results.png; a full run (no -k, -b or
--scale) also copies the chart to docs/pages/assets/benchmarks.png for the documentation.

Selecting cases (both options repeat; a case runs when it matches any -k and any -b given):
  -k TEXT      the case name contains TEXT (case-insensitive); backends are not searched,
               so `-k memory` runs only cases named "...memory...", not every case that
               happens to run on the memory broker (the dedup store cases reach Redis and
               PostgreSQL through it)
  -b BACKEND   the case runs on this broker exactly: memory, kafka or amqp
  --list       print the selection and exit
  --scale F    multiply every message count by F (e.g. 0.1 while developing)
  --gc-threshold N
               Python's generation-0 GC threshold for the whole run, msgkit and
               baselines alike (Python's default: 700); see the README's Kafka notes
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import json
import math
import pkgutil
import shutil
import sys
from pathlib import Path

from bench import cases as cases_pkg
from bench.harness import Case, Result, run_all
from msgkit.errors import BrokerUnavailableError
from msgkit.testing.brokers import TestBroker, test_brokers

OUT = Path(__file__).parent
DOCS_CHART = OUT.parent / "docs" / "pages" / "assets" / "benchmarks.png"


def load_cases() -> list[Case]:
    found: list[Case] = []
    for mod in pkgutil.iter_modules(cases_pkg.__path__):
        module = importlib.import_module(f"{cases_pkg.__name__}.{mod.name}")
        found.extend(getattr(module, "CASES", []))
    return found


def _ms(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def table(results: list[Result]) -> str:
    lines = ["| case | backend | msgkit msg/s | baseline | baseline msg/s | ratio "
             "| msgkit p50/p99 ms | baseline p50/p99 ms |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for r in results:
        base = f"{r.baseline_msgs_per_s:,.0f}" if r.baseline_msgs_per_s else "-"
        ratio = f"{r.ratio:.2f}" if r.ratio else "-"
        ours = f"{_ms(r.msgkit_p50_ms)} / {_ms(r.msgkit_p99_ms)}" if r.msgkit_p50_ms else "-"
        theirs = (f"{_ms(r.baseline_p50_ms)} / {_ms(r.baseline_p99_ms)}"
                  if r.baseline_p50_ms else "-")
        lines.append(f"| {r.case} | {r.backend} | {r.msgkit_msgs_per_s:,.0f} | "
                     f"{r.baseline or '-'} | {base} | {ratio} | {ours} | {theirs} |")
    return "\n".join(lines) + "\n"


def write(results: list[Result], failed: dict[str, str], *, docs_chart: bool = False) -> None:
    rows = [dataclasses.asdict(r) for r in results]
    (OUT / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    text = table(results)
    if failed:
        text += "\nFailed:\n\n" + "".join(f"- {name}: {error}\n" for name, error in failed.items())
    (OUT / "results.md").write_text(text)
    print(text)
    try:
        from bench.chart import draw
    except ImportError:
        print("matplotlib not installed: no chart (pip install 'msgkit[bench]')", file=sys.stderr)
        return
    draw(results, OUT / "results.png")
    if docs_chart:  # the documentation shows the chart of the last full run
        DOCS_CHART.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(OUT / "results.png", DOCS_CHART)
        print(f"chart copied to {DOCS_CHART.relative_to(OUT.parent)}")


def select(cases: list[Case], names: list[str], backends: list[str]) -> list[Case]:
    return [
        c for c in cases
        if (not names or any(k.lower() in c.name.lower() for k in names))
        and (not backends or c.backend in backends)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("-k", action="append", default=[], metavar="TEXT",
                        help="only cases whose name contains TEXT (case-insensitive)")
    parser.add_argument("-b", "--backend", action="append", default=[],
                        choices=["memory", "kafka", "amqp"], help="only cases on this broker")
    parser.add_argument("--list", action="store_true", help="print the selection and exit")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply message counts by this (default 1)")
    parser.add_argument("--gc-threshold", type=int, metavar="N",
                        help="generation-0 GC threshold for both sides (default: Python's)")
    args = parser.parse_args()
    if args.gc_threshold is not None:  # 0 turns automatic collection off
        gc.set_threshold(args.gc_threshold, *gc.get_threshold()[1:])
        print(f"GC thresholds for this run: {gc.get_threshold()}")
    cases = select(load_cases(), args.k, args.backend)
    if args.scale != 1.0:
        cases = [dataclasses.replace(c, messages=max(10, math.ceil(c.messages * args.scale)))
                 for c in cases]
    if args.list:
        for case in cases:
            print(f"{case.backend:7} {case.messages:>9,} x{case.rounds}  {case.name}")
        return 0
    kinds = test_brokers()
    started: dict[str, TestBroker] = {}
    urls: dict[str, str] = {}
    runnable = []
    for case in cases:
        if case.backend not in urls:
            broker = kinds[case.backend]()
            try:
                urls[case.backend] = broker.url_for_test(broker.start(), "bench")
                started[case.backend] = broker
            except BrokerUnavailableError as exc:
                print(f"skipping {case.backend} cases: {exc}", file=sys.stderr)
                urls[case.backend] = ""
        if urls[case.backend]:
            runnable.append(case)
    try:
        full = not (args.k or args.backend or args.scale != 1.0)
        write(*run_all(runnable, urls), docs_chart=full)
    finally:
        for broker in started.values():
            broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
