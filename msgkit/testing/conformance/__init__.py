"""The conformance suite every msgkit backend runs, third-party ones included.

    # tests/test_conformance.py of a backend package
    import pytest
    from msgkit.testing.conformance import ConformanceSuite

    class TestMyBroker(ConformanceSuite):
        @pytest.fixture
        def msgkit_url(self) -> str:
            return "mybroker://localhost:1234"

Tests that need a capability the backend does not declare (`Backend.capabilities`) are
skipped with that reason; everything else must pass. With the msgkit pytest plugin, the
`msgkit_url` fixture is parametrized over every installed test broker instead.
"""

from msgkit.testing.conformance.bad_input import BadInputContract
from msgkit.testing.conformance.batches import BatchContract
from msgkit.testing.conformance.failures import FailureContract
from msgkit.testing.conformance.fidelity import FidelityContract
from msgkit.testing.conformance.groups import GroupContract
from msgkit.testing.conformance.guarantees import GuaranteeContract
from msgkit.testing.conformance.lifecycle import LifecycleContract
from msgkit.testing.conformance.ordering import OrderingContract
from msgkit.testing.conformance.pubsub import PubSubContract
from msgkit.testing.conformance.redelivery import RedeliveryContract


class ConformanceSuite(
    PubSubContract,
    GroupContract,
    OrderingContract,
    RedeliveryContract,
    FailureContract,
    FidelityContract,
    LifecycleContract,
    BadInputContract,
    GuaranteeContract,
    BatchContract,
):
    """All contracts; subclass it as `Test...` to run it."""


__all__ = [
    "BadInputContract",
    "BatchContract",
    "ConformanceSuite",
    "FailureContract",
    "FidelityContract",
    "GroupContract",
    "GuaranteeContract",
    "LifecycleContract",
    "OrderingContract",
    "PubSubContract",
    "RedeliveryContract",
]
