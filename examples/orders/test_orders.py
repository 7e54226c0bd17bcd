"""The order flow end to end, on every backend."""

import uuid

from examples.orders.flow import CUSTOMERS, run


async def test_order_flow_pays_reserves_emails_and_replays_the_dead_letter(msgkit_url: str) -> None:
    ledger = await run(msgkit_url, suffix=uuid.uuid4().hex[:8])
    everyone = {f"order-{n}" for n in range(1, len(CUSTOMERS) + 1)}
    assert set(ledger.payments) == everyone and ledger.reserved == everyone
    assert ledger.emails == everyone
    refused = [line for line in ledger.lines if "refused" in line]
    assert len(refused) == 3, "the broken address is tried max_attempts times before the DLQ"
    assert any("skipped order-3: already charged" in line for line in ledger.lines)
