"""Smoke: one ib_insync script through the front door."""

from __future__ import annotations

from ib_insync import Stock

from tests.e2e.frontdoor_support import door_hub, ib_clients  # noqa: F401
from tests.helpers import wait_until


async def test_connect_and_tick(ib_clients) -> None:  # type: ignore[no-untyped-def]
    ib = await ib_clients(7)
    assert ib.client.serverVersion() == 176
    c = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    assert c.conId == 265598
    t = ib.reqMktData(c)
    await wait_until(lambda: t.bid == t.bid and t.bid > 0, 5.0, "a bid")
