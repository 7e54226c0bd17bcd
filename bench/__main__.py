"""`make bench`: every case in `bench/cases/`, against the brokers the test suite uses.

Writes bench/results.json, bench/results.md and bench/results.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import pkgutil
import sys
from pathlib import Path

from bench import cases as cases_pkg
from bench.harness import Case, Result, run_all
from msgkit.errors import BrokerUnavailableError
from msgkit.testing.brokers import TestBroker, test_brokers

OUT = Path(__file__).parent


def load_cases() -> list[Case]:
    found: list[Case] = []
    for mod in pkgutil.iter_modules(cases_pkg.__path__):
        module = importlib.import_module(f"{cases_pkg.__name__}.{mod.name}")
        found.extend(getattr(module, "CASES", []))
    return found


def write(results: list[Result]) -> None:
    rows = [dataclasses.asdict(r) for r in results]
    (OUT / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| case | backend | msgkit msg/s | baseline | baseline msg/s | ratio |",
             "|---|---|---:|---|---:|---:|"]
    for r in results:
        base = f"{r.baseline_msgs_per_s:,.0f}" if r.baseline_msgs_per_s else "-"
        ratio = f"{r.ratio:.2f}" if r.ratio else "-"
        lines.append(f"| {r.case} | {r.backend} | {r.msgkit_msgs_per_s:,.0f} | "
                     f"{r.baseline or '-'} | {base} | {ratio} |")
    (OUT / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart (pip install 'msgkit[bench]')", file=sys.stderr)
        return
    labels = [f"{r.case}\n{r.backend}" for r in results]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(results)), 4.5))
    xs = range(len(results))
    ax.bar([x - 0.2 for x in xs], [r.msgkit_msgs_per_s for r in results], 0.4, label="msgkit")
    ax.bar([x + 0.2 for x in xs], [r.baseline_msgs_per_s or 0 for r in results], 0.4,
           label="baseline")
    ax.set_xticks(list(xs), labels, fontsize=7, rotation=30, ha="right")
    ax.set_ylabel("messages / s (median)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "results.png", dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("-k", default="", help="only cases whose name or backend contains this")
    args = parser.parse_args()
    cases = [c for c in load_cases() if args.k in c.name or args.k == c.backend]
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
        write(run_all(runnable, urls))
    finally:
        for broker in started.values():
            broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
