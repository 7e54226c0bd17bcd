"""Testing kit: the conformance suite, the pytest plugin and helpers for users' tests."""

from msgkit.testing.collect import Collector, Holding, eventually

__all__ = ["Collector", "Holding", "eventually"]
