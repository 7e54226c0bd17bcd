"""bench/results.png: throughput of msgkit and its baseline per case (log scale), and
p50/p99 latency for the cases that measure it. Needs matplotlib (the `bench` extra)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from bench.harness import Result

MSGKIT, BASELINE = "tab:blue", "tab:orange"


def draw(results: list[Result], path: Path) -> None:
    plt.switch_backend("Agg")  # no display needed
    timed = [r for r in results if r.msgkit_p50_ms is not None]
    panels = 2 if timed else 1
    width = max(8.0, 0.45 * len(results))
    fig, axes = plt.subplots(panels, 1, figsize=(width, 5.0 * panels), squeeze=False)
    ax = axes[0][0]
    xs = list(range(len(results)))
    ax.bar([x - 0.2 for x in xs], [r.msgkit_msgs_per_s for r in results], 0.4, label="msgkit",
           color=MSGKIT)
    ax.bar([x + 0.2 for x in xs], [r.baseline_msgs_per_s or 0 for r in results], 0.4,
           label="baseline", color=BASELINE)
    ax.set_yscale("log")
    ax.set_xticks(xs, [f"{r.case} [{r.backend}]" for r in results], fontsize=7, rotation=60,
                  ha="right")
    ax.set_ylabel("messages / s (median, log scale)")
    ax.legend()
    if timed:
        ax = axes[1][0]
        xs = list(range(len(timed)))
        for offset, label, color, p50, p99 in (
            (-0.2, "msgkit", MSGKIT, [r.msgkit_p50_ms or 0 for r in timed],
             [r.msgkit_p99_ms or 0 for r in timed]),
            (0.2, "baseline", BASELINE, [r.baseline_p50_ms or 0 for r in timed],
             [r.baseline_p99_ms or 0 for r in timed]),
        ):
            ax.bar([x + offset for x in xs], p99, 0.4, alpha=0.35, color=color,
                   label=f"{label} p99")
            ax.bar([x + offset for x in xs], p50, 0.4, color=color, label=f"{label} p50")
        ax.set_yscale("log")
        ax.set_xticks(xs, [f"{r.case}\nvs {r.baseline}" for r in timed], fontsize=7)
        ax.set_ylabel("end-to-end latency, ms (log scale)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
