"""Front door: contract details, historical data and other requests that
pass through to the Gateway with their request ids remapped."""

from __future__ import annotations

import asyncio

from ibhub.hub.server import HubServer
from ibhub.sim import SimGateway
from tests.e2e import frontdoor_support
from tests.e2e.frontdoor_support import ClientFactory, door_of, quiet_ib_insync
from tests.helpers import wait_until
from tests.ibclient import Forex, Stock

# fixtures shared by the front-door tests
door_hub = frontdoor_support.door_hub
ib_clients = frontdoor_support.ib_clients


async def test_contract_details_and_historical_bars(
    ib_clients: ClientFactory, door_hub: HubServer
) -> None:
    quiet_ib_insync()
    a, b = await ib_clients(61), await ib_clients(62)
    # both scripts use the same request ids (their own counters): the hub keeps them apart
    details_a, details_b = await asyncio.gather(
        a.reqContractDetailsAsync(Stock("AAPL", "SMART", "USD")),
        b.reqContractDetailsAsync(Stock("MSFT", "SMART", "USD")),
    )
    assert [d.contract.conId for d in details_a] == [265598]
    assert [d.contract.conId for d in details_b] == [272093]
    assert details_a[0].longName and details_a[0].tradingHours
    c = Stock("AAPL", "SMART", "USD")
    await a.qualifyContractsAsync(c)
    bars = await a.reqHistoricalDataAsync(c, "", "2 D", "1 hour", "TRADES", True)
    assert len(bars) >= 7 and all(x.high >= x.low > 0 for x in bars)
    daily = await b.reqHistoricalDataAsync(c, "", "5 D", "1 day", "MIDPOINT", True)
    assert 1 <= len(daily) <= 5
    head = await a.reqHeadTimeStampAsync(c, "TRADES", True, 1)
    assert head.year < 2000
    # historical ticks pass through (issue 15); a zone-less end is not UTC (2174 warning)
    ticks = await a.reqHistoricalTicksAsync(c, "", "20260303-15:00:00", 30, "TRADES", False)
    assert len(ticks) == 30 and ticks[-1].time.timestamp() == 1772550000
    quotes = await b.reqHistoricalTicksAsync(c, "", "20260303 10:00:00", 30, "BID_ASK", False)
    assert len(quotes) == 30 and quotes[-1].time == ticks[-1].time  # 10:00 New York
    # an unknown contract ends the request with IB's error (no hang), on the right id
    assert await a.reqContractDetailsAsync(Stock("NOSUCHSYM", "SMART", "USD")) == []
    # nothing of this is left behind in the routing table
    await wait_until(lambda: not door_of(door_hub).passthrough.routes, 2.0, "routes ended")


async def test_keep_up_to_date_and_tick_by_tick_end_with_the_script(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway
) -> None:
    quiet_ib_insync()
    ib = await ib_clients(63)
    c = Forex("EURUSD")
    await ib.qualifyContractsAsync(c)
    bars = await ib.reqHistoricalDataAsync(c, "", "60 S", "5 secs", "MIDPOINT", False,
                                           keepUpToDate=True)
    updates: list[int] = []
    bars.updateEvent += lambda b, has_new: updates.append(len(b))
    await wait_until(lambda: updates, 5.0, "a historicalDataUpdate")
    tbt = ib.reqTickByTickData(c, "BidAsk")
    await wait_until(lambda: tbt.tickByTicks, 5.0, "a tick-by-tick quote")
    kinds = {s.kind for s in hub_sim.market_data_subscriptions()}
    assert {"hist", "tbt"} <= kinds, kinds
    ib.disconnect()  # the hub cancels both upstream
    await wait_until(lambda: not hub_sim.market_data_subscriptions(), 5.0, "streams cancelled")
    assert not door_of(door_hub).passthrough.routes


async def test_real_time_bars_and_snapshot(ib_clients: ClientFactory, door_hub: HubServer,
                                           hub_sim: SimGateway) -> None:
    """Real-time bars of exactly the whatToShow asked for (issue 15): SPY TRADES and BID,
    forex MIDPOINT served; forex TRADES is the Gateway's error 420, never midpoint bars
    labelled TRADES."""
    quiet_ib_insync()
    ib = await ib_clients(64)
    c, eur = Stock("SPY", "SMART", "USD"), Forex("EURUSD")
    await ib.qualifyContractsAsync(c, eur)
    [ticker] = await ib.reqTickersAsync(c)  # snapshot=True, ends with tickSnapshotEnd
    assert ticker.bid > 0 and ticker.ask > 0
    errors: list[tuple[int, int]] = []
    ib.errorEvent += lambda rid, code, msg, _c: errors.append((rid, code))
    bars = ib.reqRealTimeBars(c, 5, "TRADES", False)
    bid_bars = ib.reqRealTimeBars(c, 5, "BID", False)
    mid_bars = ib.reqRealTimeBars(eur, 5, "MIDPOINT", False)
    fx_trades = ib.reqRealTimeBars(eur, 5, "TRADES", False)
    await wait_until(lambda: any(code == 420 for _, code in errors), 5.0, "420 for FX TRADES")
    assert [code for _, code in errors] == [420]
    await wait_until(lambda: {(s.symbol, s.kind) for s in hub_sim.market_data_subscriptions()}
                     >= {("SPY", "rtbars"), ("EUR", "rtbars")}, 5.0, "bar lines upstream")
    kinds = sorted(s.kind for s in door_hub.subs.all() if s.kind.startswith("bars"))
    assert kinds == ["bars", "bars", "bars.BID"], kinds  # FX MIDPOINT = the plain FX line
    await wait_until(lambda: bars and bid_bars and mid_bars, 12.0, "5-second bars")
    assert bars[-1].high >= bars[-1].low > 0 and bars[-1].volume >= 0
    assert bid_bars[-1].volume == -1 and mid_bars[-1].volume == -1  # quotes carry no volume
    assert 0.5 < mid_bars[-1].close < 2.0  # EURUSD, not a stock price
    assert not fx_trades


async def test_gateway_errors_come_back_on_the_scripts_request_id(
    ib_clients: ClientFactory, door_hub: HubServer
) -> None:
    """Fundamental data passes through; the simulator refuses it for a currency pair
    (IB's 430), and the script gets that refusal on its own request id."""
    quiet_ib_insync()
    ib = await ib_clients(65)
    c = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    errors: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda rid, code, msg, _c: errors.append((rid, code, msg))
    eur = Forex("EURUSD")
    await ib.qualifyContractsAsync(eur)
    own_id = ib.client._reqIdSeq  # the id the library gives its next request
    request = asyncio.ensure_future(ib.reqFundamentalDataAsync(eur, "ReportSnapshot"))
    await wait_until(lambda: errors, 5.0, "the Gateway's refusal")
    request.cancel()
    assert errors[0][:2] == (own_id, 430), errors
    assert "fundamentals data" in errors[0][2]
    await wait_until(lambda: not door_of(door_hub).passthrough.routes, 2.0, "route ended")
