"""Market depth end to end (issue 15): two SDK clients and an unmodified TWS script on one
instrument share ONE upstream depth subscription; the depth budget (IB's 3) is
reported in the status and enforced (SDK: line_limit; TWS script: error 309); the book
a late joiner gets first is the topic's last value; releases cancel upstream."""

from __future__ import annotations

import asyncio

import pytest

from ibhub.client import AsyncHub, HubError
from ibhub.hub.server import HubServer
from ibhub.protocol import DepthBook, ErrorCode
from ibhub.sim import SimGateway
from tests.e2e import frontdoor_support
from tests.e2e.frontdoor_support import ClientFactory, door_of, quiet_ib_insync
from tests.helpers import wait_until
from tests.ibclient import Stock

pytestmark = pytest.mark.timeout(60)

door_hub = frontdoor_support.door_hub
ib_clients = frontdoor_support.ib_clients


def sdk(hub: HubServer, name: str) -> AsyncHub:
    return AsyncHub(pub=hub.pub_endpoint, rpc=hub.rpc_endpoint, name=name, request_timeout=5.0)


def sane(book: DepthBook, rows: int) -> None:
    assert len(book.bids) == rows and len(book.asks) == rows, book
    bids = [lv.price for lv in book.bids]
    asks = [lv.price for lv in book.asks]
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
    assert bids[0] < asks[0]
    assert all(lv.market_maker for lv in book.bids)  # SMART depth names the exchange


async def test_two_sdk_clients_and_a_tws_script_share_one_book(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway,
) -> None:
    quiet_ib_insync()
    rows = door_hub.settings.depth_rows
    a, b = sdk(door_hub, "depth-a"), sdk(door_hub, "depth-b")
    async with a, b:
        sub_a = await a.subscribe("AAPL", kind="depth")
        first = await sub_a.get(5.0)
        assert isinstance(first, DepthBook) and first.symbol == "AAPL"
        def full() -> bool:
            book = sub_a.latest
            return isinstance(book, DepthBook) and len(book.bids) == len(book.asks) == rows

        await wait_until(full, 5.0, "a full book")
        assert isinstance(sub_a.latest, DepthBook)
        sane(sub_a.latest, rows)
        # a late joiner starts from the topic's last value: a complete book at once
        sub_b = await b.subscribe("AAPL", kind="depth")
        late = await sub_b.get(5.0)
        assert isinstance(late, DepthBook) and len(late.bids) == rows
        # an unmodified TWS script on the same instrument: its own 5 rows, L2 rows named
        ib = await ib_clients(71)
        c = Stock("AAPL", "SMART", "USD")
        await ib.qualifyContractsAsync(c)
        ticker = ib.reqMktDepth(c, numRows=5, isSmartDepth=True)
        await wait_until(lambda: len(ticker.domBids) == 5 and len(ticker.domAsks) == 5, 5.0,
                         "the script's book")
        assert ticker.domBids[0].price < ticker.domAsks[0].price
        assert all(lv.marketMaker for lv in ticker.domBids)
        # ONE upstream depth subscription for all three
        assert [(cid, con, smart) for cid, _, con, smart in hub_sim.depth.subscriptions()] \
            == [(0, c.conId, True)]
        line = door_hub.market.depth.get(c.conId, "depth")
        assert line is not None and len(line.leases) == 3
        status = await a.status()
        assert (status.depth_used, status.depth_max) == (1, 3)
        assert any(s.kind == "depth" and s.subscribers == 3 for s in status.subscriptions)
        # the script's book follows the shared book: it matches the hub's first 5 rows
        def same_top() -> bool:
            book = door_hub.market.depth.get(c.conId, "depth").stream  # type: ignore[union-attr]
            return [(lv.price, lv.size) for lv in ticker.domBids] == \
                [(p, s) for p, s, _ in book.bids[:5]]
        await wait_until(same_top, 5.0, "script rows == hub rows")
        # the budget: 3 books; a 4th instrument is refused (SDK: line_limit, script: 309)
        await a.subscribe("MSFT", kind="depth")
        await b.subscribe("SPY", kind="depth")
        with pytest.raises(HubError) as refused:
            await a.subscribe("KO", kind="depth")
        assert refused.value.code == ErrorCode.LINE_LIMIT and "depth_max" in str(refused.value)
        errors: list[tuple[int, int, str]] = []
        ib.errorEvent += lambda rid, code, msg, _c: errors.append((rid, code, msg))
        ko = Stock("KO", "SMART", "USD")
        await ib.qualifyContractsAsync(ko)
        ib.reqMktDepth(ko, numRows=3)
        await wait_until(lambda: any(code == 309 for _, code, _ in errors), 5.0, "309")
        assert len(hub_sim.depth.subscriptions()) == 3
        # releases: the script's cancel keeps the line (SDK readers hold it) ...
        ib.cancelMktDepth(c, isSmartDepth=True)
        await wait_until(lambda: len(line.leases) == 2, 5.0, "script released")
        await sub_a.close()
        await sub_b.close()
    # ... and when the last reader goes, the Gateway's subscription is cancelled
    await wait_until(lambda: hub_sim.depth.subscriptions() == [], 5.0, "all cancelled")
    assert door_hub.market.depth.lines_used == 0


async def test_frontdoor_depth_exchanges_and_l1_rows(
    ib_clients: ClientFactory, door_hub: HubServer,
) -> None:
    quiet_ib_insync()
    ib = await ib_clients(72)
    exchanges = await asyncio.wait_for(ib.reqMktDepthExchangesAsync(), 5.0)
    assert ("NASDAQ", "STK") in {(d.exchange, d.secType) for d in exchanges}
    c = Stock("MSFT", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    ticker = ib.reqMktDepth(c, numRows=3)  # not SMART: rows without market makers
    await wait_until(lambda: len(ticker.domBids) == 3, 5.0, "L1 rows")
    assert all(lv.marketMaker == "" for lv in ticker.domBids)
    ib.disconnect()
    await wait_until(lambda: door_hub.market.depth.lines_used == 0, 5.0, "disconnect releases")
    assert not door_of(door_hub).sessions or True
