"""Delivery guarantees as the user sees them, the same on every backend (the crash tests in
msgkit's own suite prove them under SIGKILL)."""

from __future__ import annotations

import pytest

import msgkit
from msgkit.dedup import Dedup
from msgkit.errors import ConfigurationError
from msgkit.testing.collect import Collector
from msgkit.testing.conformance.support import WAIT, fast_retries

EOS = msgkit.Guarantee.EXACTLY_ONCE


class GuaranteeContract:
    async def test_at_most_once_does_not_retry_a_failed_handler(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        got = Collector(fail=lambda m: m.value == b"fails")
        # In-process retries would run in this worker before it takes "after": deterministic.
        policy = msgkit.FailurePolicy(retries=2, backoff=0.001, delays=(0.0,))
        await msgkit_broker.consumer(unique_name, group="g", guarantee=msgkit.Guarantee.AT_MOST_ONCE,
                                     failure=policy).start(got)
        producer = msgkit_broker.producer(guarantee=msgkit.Guarantee.AT_MOST_ONCE)
        await producer.send(unique_name, b"fails")
        await got.wait_failures(1, timeout=WAIT)
        await producer.send(unique_name, b"after")
        assert [m.value for m in await got.wait_for(1, timeout=WAIT)] == [b"after"]
        assert [m.attempt for m in got.failures] == [1]
        assert len(got.failures) == 1, "an at-most-once handler ran twice"

    async def test_exactly_once_publishes_only_the_successful_attempts_sends(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        out = f"{unique_name}.out"

        async def relay(msg: msgkit.Message, ctx: msgkit.Context) -> None:
            await ctx.send(out, msg.value + f"@{msg.attempt}".encode())
            if msg.value == b"a" and msg.attempt == 1:
                raise RuntimeError("fails after sending")

        outputs = Collector()
        await msgkit_broker.consumer(out, group="verify").start(outputs)
        async with Dedup("memory://") as store:
            # A store where exactly-once needs one; transactions need none (and refuse it).
            dedup = None if msgkit_broker.capabilities.transactions else store
            await msgkit_broker.consumer(unique_name, group="g", guarantee=EOS, dedup=dedup,
                                         failure=fast_retries()).start(relay)
            producer = msgkit_broker.producer()
            a = await producer.send(unique_name, b"a")
            [first] = await outputs.wait_for(1, timeout=WAIT)
            assert first.value == b"a@2"
            assert first.idempotency_key == f"{a}/0"  # derived: the same on a redelivery
            await producer.send(unique_name, b"b")
            got = await outputs.wait_for(2, timeout=WAIT)
            assert sorted(m.value for m in got) == [b"a@2", b"b@1"]

    async def test_exactly_once_takes_a_store_exactly_where_it_has_no_transactions(
        self, msgkit_broker: msgkit.Broker, unique_name: str
    ) -> None:
        if msgkit_broker.capabilities.transactions:
            async with Dedup("memory://") as dedup:
                with pytest.raises(ConfigurationError, match="AT_LEAST_ONCE with dedup="):
                    msgkit_broker.consumer(unique_name, group="g", guarantee=EOS, dedup=dedup)
            return
        with pytest.raises(ConfigurationError, match="dedup="):
            msgkit_broker.consumer(unique_name, group="g", guarantee=EOS)
        with pytest.raises(ConfigurationError, match="idempotency_key="):
            msgkit_broker.producer(guarantee=EOS)
