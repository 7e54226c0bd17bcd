"""What the services did, in order: the demo prints it, the tests check it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Ledger:
    lines: list[str] = field(default_factory=list)
    charged: dict[str, float] = field(default_factory=dict)
    refunded: set[str] = field(default_factory=set)
    reserved: set[str] = field(default_factory=set)
    receipts: set[str] = field(default_factory=set)
    confirmations: set[str] = field(default_factory=set)
    cancelled: set[str] = field(default_factory=set)
    dead_lettered: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    quiet: bool = False

    def log(self, service: str, text: str) -> None:
        self.lines.append(f"{service:<12} {text}")
        if not self.quiet:
            print(self.lines[-1], flush=True)

