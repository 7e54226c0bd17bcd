"""The order flows end to end, on every backend."""

from examples.orders.flow import CUSTOMERS, run


async def test_choreography_and_saga(msgkit_url: str) -> None:
    chore, orchestrated, outcomes = await run(msgkit_url, quiet=True)
    everyone = {f"order-{n}" for n in range(1, len(CUSTOMERS) + 1)}
    assert set(chore.charged) == everyone and chore.reserved == everyone
    assert chore.confirmations == everyone and chore.receipts == everyone
    refused = [line for line in chore.lines if "refused" in line]
    assert len(refused) == 3, "the broken address is tried max_attempts times before the DLQ"
    assert chore.dead_lettered == ["order-3"]
    assert not any("skipped" in line for line in chore.lines), "the replay reached payments"

    assert outcomes == {"saga-1": "completed", "saga-2": "compensated"}
    assert orchestrated.refunded == {"saga-2"} and orchestrated.cancelled == {"saga-2"}
    saga2 = [line for line in orchestrated.lines if "saga-2" in line]
    assert saga2.index(next(x for x in saga2 if "refund" in x)) < \
        saga2.index(next(x for x in saga2 if "cancelled" in x)), "compensations run in reverse"
