"""Shared pieces of the conformance contracts."""

from __future__ import annotations

import pytest

import msgkit

WAIT = 30.0
"""Generous deadline for anything crossing a real broker (group joins, redeliveries)."""


def requires(broker: msgkit.Broker, capability: str) -> None:
    if not getattr(broker.capabilities, capability):
        pytest.skip(f"backend does not declare capability {capability!r}")


def fast_retries(max_attempts: int = 3) -> msgkit.FailurePolicy:
    return msgkit.FailurePolicy(max_attempts=max_attempts, delays=(0.0,))
