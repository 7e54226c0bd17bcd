"""The conformance suite on every installed backend (`--msgkit-backends` narrows it)."""

from msgkit.testing.conformance import ConformanceSuite


class TestConformance(ConformanceSuite):
    pass
