"""Front door: what an unmodified options script asks for, with the installed IB client
library (ib_insync or ib_async): option chains and matching symbols (passed through),
greeks on shared market-data lines, IB's option model (passed through), generic tick
lists (a line per list, shared by scripts asking the same) and delayed data types."""

from __future__ import annotations

import asyncio

from ibhub.hub.server import HubServer
from ibhub.sim import SimGateway
from tests.e2e import frontdoor_support
from tests.e2e.frontdoor_support import ClientFactory, door_of, quiet_ib_insync
from tests.helpers import wait_until
from tests.ibclient import Option, Stock

door_hub = frontdoor_support.door_hub
ib_clients = frontdoor_support.ib_clients

DELAYED = {66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 88}


def lines(sim: SimGateway, con_id: int) -> int:
    return sum(1 for s in sim.market_data_subscriptions()
               if s.con_id == con_id and s.kind == "mkt")


async def test_chain_greeks_and_option_model(ib_clients: ClientFactory, door_hub: HubServer,
                                             hub_sim: SimGateway) -> None:
    quiet_ib_insync()
    a, b = await ib_clients(71), await ib_clients(72)
    errors: list[int] = []
    a.errorEvent += lambda rid, code, msg, contract: errors.append(code)
    spy = Stock("SPY", "SMART", "USD")
    await a.qualifyContractsAsync(spy)
    chains = await asyncio.wait_for(a.reqSecDefOptParamsAsync("SPY", "", "STK", spy.conId), 5)
    smart = next(c for c in chains if c.exchange == "SMART")
    assert len(smart.expirations) == 3 and 590.0 in smart.strikes
    opt = Option("SPY", smart.expirations[0], 590.0, "C", "SMART")
    await a.qualifyContractsAsync(opt)
    ta, tb = a.reqMktData(opt), b.reqMktData(opt)
    await wait_until(lambda: ta.modelGreeks is not None and tb.modelGreeks is not None
                     and ta.bidGreeks is not None, 5, "greeks through the front door")
    assert lines(hub_sim, opt.conId) == 1  # one upstream line for both scripts
    g = ta.modelGreeks
    assert 0.3 < g.delta < 0.7 and g.gamma > 0 and g.vega > 0 and abs(g.undPrice - 590) < 5
    assert ta.marketDataType == 1 and ta.high >= ta.low > 0

    iv = await asyncio.wait_for(a.calculateImpliedVolatilityAsync(opt, 15.0, 591.0), 5)
    assert iv.optPrice == 15.0 and 0.05 < iv.impliedVol < 0.6
    px = await asyncio.wait_for(b.calculateOptionPriceAsync(opt, iv.impliedVol, 591.0), 5)
    assert abs(px.optPrice - 15.0) < 1e-3
    refused = await asyncio.wait_for(a.calculateImpliedVolatilityAsync(spy, 1.0, 590.0), 5)
    assert not refused and 322 in errors  # not an option: the Gateway's error ends it
    found = await asyncio.wait_for(b.reqMatchingSymbolsAsync("AAP"), 5)
    assert found[0].contract.symbol == "AAPL" and "OPT" in found[0].derivativeSecTypes
    a.cancelMktData(opt)
    b.cancelMktData(opt)
    await wait_until(lambda: lines(hub_sim, opt.conId) == 0, 3, "line cancelled")
    await wait_until(lambda: not door_of(door_hub).passthrough.routes, 3, "routes ended")


async def test_generic_ticks_and_delayed_data(ib_clients: ClientFactory, door_hub: HubServer,
                                              hub_sim: SimGateway) -> None:
    quiet_ib_insync()
    a, b, c = await ib_clients(73), await ib_clients(74), await ib_clients(75)
    errors: list[tuple[int, int]] = []
    a.errorEvent += lambda rid, code, msg, contract: errors.append((rid, code))
    aapl, msft = Stock("AAPL", "SMART", "USD"), Stock("MSFT", "SMART", "USD")
    await a.qualifyContractsAsync(aapl, msft)
    ga = a.reqMktData(aapl, "233,236,101")
    gb = b.reqMktData(aapl, "101, 236,233")  # the same list: the same line
    c.reqMarketDataType(3)
    seen: set[int] = set()  # every tick type c's tickers got
    c.pendingTickersEvent += lambda tickers: seen.update(
        t.tickType for ticker in tickers for t in ticker.ticks)
    d = c.reqMktData(aapl)  # the plain line, under the delayed tick ids
    await wait_until(lambda: ga.shortableShares > 0 and ga.callOpenInterest > 0
                     and gb.shortableShares > 0 and d.bid > 0 and d.ask > 0
                     and {66, 67, 75} <= seen, 5, "generic and delayed ticks")
    await wait_until(lambda: ga.rtVolume > 0 or ga.vwap > 0, 5, "RTVolume")
    assert lines(hub_sim, aapl.conId) == 2  # the plain line and the "101,233,236" line
    assert d.marketDataType == 3 and seen <= DELAYED
    assert ga.marketDataType == 1
    bad = a.reqMktData(msft, "233;x")
    await wait_until(lambda: any(code == 321 for _, code in errors), 3, "illegal list")
    a.cancelMktData(bad.contract)
    a.cancelMktData(aapl)
    b.cancelMktData(aapl)
    c.cancelMktData(aapl)
    await wait_until(lambda: lines(hub_sim, aapl.conId) == 0, 3, "lines cancelled")
