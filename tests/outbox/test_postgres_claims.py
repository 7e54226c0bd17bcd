"""PostgreSQL claims, relay against relay: a key's rows go to whoever holds its oldest
waiting row, and rows a claim leaves out are not kept locked."""

from __future__ import annotations

import pytest

from msgkit.outbox.relay import open_source
from msgkit.outbox.schema import Table
from msgkit.outbox.source import Claim, Source
from tests.outbox.conftest import OutboxDB

pytestmark = pytest.mark.parametrize("outbox_db", ["postgres"], indirect=True)


async def _claim(source: Source, limit: int) -> Claim:
    claim = await source.claim(limit, ())
    assert claim is not None
    return claim


def _values(claim: Claim) -> list[bytes]:
    return [row.message.value for row in claim.rows]


async def test_a_keys_rows_wait_for_its_head_and_left_out_rows_are_not_held(
    outbox_db: OutboxDB,
) -> None:
    await outbox_db.write([("t", "a1", {"key": "a"}), ("t", "a2", {"key": "a"}),
                           ("t", "a3", {"key": "a"}), ("t", "b1", {"key": "b"}),
                           ("t", "c1", {"key": "c"})])
    x, y, z = (open_source(outbox_db.url, Table(outbox_db.table), retention=0.0, lease=10.0)
               for _ in range(3))
    for source in (x, y, z):
        await source.open()
    try:
        first = await _claim(x, 2)
        assert _values(first) == [b"a1", b"a2"]
        # y's rows include a3, whose key's head is x's: a3 is left out, the others are y's.
        second = await _claim(y, 10)
        assert _values(second) == [b"b1", b"c1"]
        assert await z.claim(10, ()) is None, "a3 must wait while a1 and a2 are held"
        await first.finish([row.id for row in first.rows], {})
        # y still holds b1 and c1; had it kept a3 locked, z would not get it now.
        third = await _claim(z, 10)
        assert _values(third) == [b"a3"]
        await second.finish([row.id for row in second.rows], {})
        await third.finish([row.id for row in third.rows], {})
        assert (await x.counts()).pending == 0
    finally:
        for source in (x, y, z):
            await source.close()
