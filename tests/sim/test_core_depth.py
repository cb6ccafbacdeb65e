"""Market depth, historical ticks and implied time zones in the simulator, with the
installed IB client library over the TWS wire."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from typing import Any

from ibhub.sim import SimConfig, SimGateway
from tests.helpers import wait_until
from tests.ibclient import IB, Forex, Stock
from tests.sim.core_support import connected

SEED = 77


def errors_of(ib: IB) -> list[tuple[int, int, str]]:
    seen: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, msg, contract: seen.append((req_id, code, msg))
    return seen


def sane_book(levels: list[Any], side: str) -> None:
    prices = [lv.price for lv in levels]
    assert prices and all(math.isfinite(p) and p > 0 for p in prices), prices
    assert prices == sorted(prices, reverse=side == "bid"), (side, prices)
    assert all(lv.size > 0 for lv in levels)


async def test_depth_books_limit_and_exchanges() -> None:
    async with SimGateway(SimConfig(seed=SEED, tick_rate=40)) as sim:
        async with connected(sim) as ib:
            errors = errors_of(ib)
            names = ("AAPL", "MSFT", "SPY", "KO")
            contracts = [Stock(n, "SMART", "USD") for n in names]
            await ib.qualifyContractsAsync(*contracts)
            # L2 (SMART) depth: market makers named per row; top of book = the quote
            aapl = ib.reqMktDepth(contracts[0], numRows=5, isSmartDepth=True)
            await wait_until(lambda: len(aapl.domBids) == 5 and len(aapl.domAsks) == 5, 2,
                             "a full 5-row book")
            sane_book(aapl.domBids, "bid")
            sane_book(aapl.domAsks, "ask")
            assert aapl.domBids[0].price < aapl.domAsks[0].price
            assert {lv.marketMaker for lv in aapl.domBids} <= {"NASDAQ", "ARCA", "IEX"}
            updates: list[int] = []
            aapl.updateEvent += lambda t: updates.append(len(t.domTicks))
            await wait_until(lambda: len(updates) >= 5, 2, "book updates")
            sane_book(aapl.domBids, "bid")
            assert aapl.domBids[0].price < aapl.domAsks[0].price
            # L1 (one exchange) depth: no market maker
            msft = ib.reqMktDepth(contracts[1], numRows=3)
            await wait_until(lambda: len(msft.domBids) == 3, 2, "MSFT book")
            assert all(lv.marketMaker == "" for lv in msft.domBids)
            ib.reqMktDepth(contracts[2], numRows=2)
            await wait_until(lambda: len(sim.depth.subscriptions()) == 3, 2, "3 books")
            # the 4th at once: error 309, as the Gateway's default limit of 3
            ib.reqMktDepth(contracts[3], numRows=2)
            await wait_until(lambda: any(c == 309 for _, c, _ in errors), 2, "error 309")
            [msg] = [m for _, c, m in errors if c == 309]
            assert msg == "Max number (3) of market depth requests has been reached"
            ib.cancelMktDepth(contracts[1], isSmartDepth=False)
            await wait_until(lambda: len(sim.depth.subscriptions()) == 2, 2, "cancel")
            exchanges = await asyncio.wait_for(ib.reqMktDepthExchangesAsync(), 2)
            assert {(d.exchange, d.secType) for d in exchanges} >= {("NASDAQ", "STK"),
                                                                    ("IDEALPRO", "CASH")}
        await wait_until(lambda: sim.depth.subscriptions() == [], 2, "disconnect drops")


async def test_depth_is_seeded() -> None:
    books = []
    for _ in range(2):
        async with SimGateway(SimConfig(seed=SEED, tick_rate=0)) as sim:
            async with connected(sim) as ib:
                eur = Forex("EURUSD")
                await ib.qualifyContractsAsync(eur)
                t = ib.reqMktDepth(eur, numRows=4)
                def full(t: Any = t) -> bool:
                    return len(t.domAsks) == 4

                await wait_until(full, 2, "book")
                books.append([(lv.price, lv.size) for lv in t.domBids + t.domAsks])
    assert books[0] == books[1]


async def test_historical_ticks_and_implied_zone(sim: SimGateway) -> None:
    async with connected(sim) as ib:
        errors = errors_of(ib)
        aapl, eur = Stock("AAPL", "SMART", "USD"), Forex("EURUSD")
        await ib.qualifyContractsAsync(aapl, eur)
        end = dt.datetime(2026, 3, 3, 15, 0, tzinfo=dt.UTC)
        last = await asyncio.wait_for(ib.reqHistoricalTicksAsync(
            aapl, "", end, 50, "TRADES", useRth=False), 3)
        assert len(last) == 50
        assert all(t.price > 0 and t.size > 0 for t in last)
        times = [t.time for t in last]
        assert times == sorted(times) and times[-1] == end
        again = await asyncio.wait_for(ib.reqHistoricalTicksAsync(
            aapl, "", end, 50, "TRADES", useRth=False), 3)
        assert [(t.time, t.price) for t in again] == [(t.time, t.price) for t in last]
        quotes = await asyncio.wait_for(ib.reqHistoricalTicksAsync(
            eur, end - dt.timedelta(minutes=5), "", 20, "BID_ASK", useRth=False), 3)
        assert len(quotes) == 20 and all(q.priceBid < q.priceAsk for q in quotes)
        assert quotes[0].time == end - dt.timedelta(minutes=5)
        mids = await asyncio.wait_for(ib.reqHistoricalTicksAsync(
            eur, "", end, 5, "MIDPOINT", useRth=False), 3)
        assert len(mids) == 5
        # forex has no trades: an error that ends the request (empty answer)
        none = await asyncio.wait_for(ib.reqHistoricalTicksAsync(
            eur, "", end, 5, "TRADES", useRth=False), 3)
        assert none == [] and any(c == 162 for _, c, _ in errors)
        # a naive end time is NOT UTC: TWS warns (2174) and reads it in the instrument's
        # zone (US/Eastern for AAPL): 10:00 naive = 15:00 UTC in March
        naive = await asyncio.wait_for(ib.reqHistoricalTicksAsync(
            aapl, "", "20260303 10:00:00", 50, "TRADES", useRth=False), 3)
        assert [(t.time, t.price) for t in naive] == [(t.time, t.price) for t in last]
        assert any(c == 2174 for _, c, _ in errors)
        bars_naive = await asyncio.wait_for(ib.reqHistoricalDataAsync(
            aapl, "20260303 10:00:00", "600 S", "1 min", "TRADES", False, 2), 3)
        bars_utc = await asyncio.wait_for(ib.reqHistoricalDataAsync(
            aapl, "20260303-15:00:00", "600 S", "1 min", "TRADES", False, 2), 3)
        assert bars_naive and [b.date for b in bars_naive] == [b.date for b in bars_utc]
