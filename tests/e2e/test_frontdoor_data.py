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


async def test_real_time_bars_and_snapshot(ib_clients: ClientFactory) -> None:
    quiet_ib_insync()
    ib = await ib_clients(64)
    c = Stock("SPY", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    [ticker] = await ib.reqTickersAsync(c)  # snapshot=True, ends with tickSnapshotEnd
    assert ticker.bid > 0 and ticker.ask > 0
    bars = ib.reqRealTimeBars(c, 5, "TRADES", False)
    errors: list[int] = []
    ib.errorEvent += lambda rid, code, msg, _c: errors.append(code)
    ib.reqRealTimeBars(c, 5, "BID", False)  # the hub's bar lines are TRADES
    await wait_until(lambda: 320 in errors, 5.0, "error for BID bars")
    await wait_until(lambda: bars, 12.0, "a 5-second bar")
    assert bars[-1].high >= bars[-1].low > 0


async def test_gateway_errors_come_back_on_the_scripts_request_id(
    ib_clients: ClientFactory, door_hub: HubServer
) -> None:
    """Market depth passes through; the simulator refuses it (321), and the script gets
    that refusal on its own request id."""
    quiet_ib_insync()
    ib = await ib_clients(65)
    c = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    errors: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda rid, code, msg, _c: errors.append((rid, code, msg))
    ticker = ib.reqMktDepth(c, 5)
    own_id = ib.wrapper.ticker2ReqId["mktDepth"][ticker]
    await wait_until(lambda: errors, 5.0, "the Gateway's refusal")
    assert errors[0][:2] == (own_id, 320), errors
    assert "simulator" in errors[0][2]
    await wait_until(lambda: not door_of(door_hub).passthrough.routes, 2.0, "route ended")
