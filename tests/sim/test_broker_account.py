"""Positions, portfolio, account values and account summary against the simulated Gateway,
seen from unmodified ib_insync over TCP."""

from __future__ import annotations

from ibhub.sim.ledger import START_CASH
from tests.ibclient import LimitOrder, MarketOrder
from tests.sim.broker_support import client, gateway, qualified, step_until, wait_until


def _summary(ib, tag: str, account: str = "") -> float:
    values = [v for v in ib.wrapper.acctSummary.values()
              if v.tag == tag and v.currency == "USD" and (not account or v.account == account)]
    assert len(values) == 1, (tag, values)
    return float(values[0].value)


async def test_connect_reports_a_fresh_account() -> None:
    async with gateway() as sim, client(sim) as ib:
        assert ib.managedAccounts() == ["DU1234567"]
        assert ib.positions() == [] and ib.portfolio() == [] and ib.fills() == []
        values = {v.tag: v.value for v in ib.accountValues() if v.currency == "USD"}
        assert float(values["NetLiquidation"]) == START_CASH
        assert float(values["TotalCashValue"]) == START_CASH
        assert float(values["BuyingPower"]) == 4 * START_CASH
        await ib.accountSummaryAsync()
        assert _summary(ib, "AvailableFunds") == START_CASH


async def test_positions_and_account_summary_follow_a_fill() -> None:
    async with gateway() as sim, client(sim) as ib:
        msft = await qualified(ib, "MSFT")
        await ib.accountSummaryAsync()  # subscribes; the simulator pushes changes after fills
        assert _summary(ib, "TotalCashValue") == START_CASH
        trade = ib.placeOrder(msft, MarketOrder("BUY", 300))
        await wait_until(trade.isDone)
        price = trade.fills[0].execution.price
        commission = 300 * 0.005
        await wait_until(lambda: [p.position for p in ib.positions()] == [300.0],
                         what="position pushed")
        (pos,) = ib.positions()
        assert pos.contract.conId == msft.conId and pos.account == "DU1234567"
        assert abs(pos.avgCost - (price + commission / 300)) < 1e-6  # IB: includes commission
        expected_cash = START_CASH - 300 * price - commission
        await wait_until(lambda: abs(_summary(ib, "TotalCashValue") - expected_cash) < 0.01,
                         what="account summary pushed")
        gross = _summary(ib, "GrossPositionValue")
        assert abs(gross - 300 * sim.broker.price_of(msft.conId)) < 0.01
        assert abs(_summary(ib, "InitMarginReq") - 0.25 * gross) < 0.01
        assert abs(_summary(ib, "NetLiquidation") - (expected_cash + gross)) < 0.01
        assert sim.broker.positions("DU1234567")[msft.conId][0] == 300


async def test_portfolio_after_account_updates() -> None:
    async with gateway() as sim, client(sim) as ib:
        aapl = await qualified(ib)
        trade = ib.placeOrder(aapl, MarketOrder("BUY", 40))
        await wait_until(trade.isDone)
        await wait_until(lambda: len(ib.portfolio()) == 1, what="updatePortfolio pushed")
        (item,) = ib.portfolio()
        mark = sim.broker.price_of(aapl.conId)
        assert item.contract.conId == aapl.conId and item.position == 40
        assert item.marketPrice == mark and abs(item.marketValue - 40 * mark) < 1e-6
        assert abs(item.unrealizedPNL - (40 * mark - 40 * item.averageCost)) < 1e-6
        # a fresh subscription (a reconnecting client) gets the same portfolio at once
        await ib.reqAccountUpdatesAsync("DU1234567")
        assert [p.position for p in ib.portfolio()] == [40.0]


async def test_round_trip_realizes_pnl_net_of_commissions() -> None:
    async with gateway() as sim, client(sim) as ib:
        spy = await qualified(ib, "SPY")
        buy = ib.placeOrder(spy, MarketOrder("BUY", 100))
        await wait_until(buy.isDone)
        sell = ib.placeOrder(spy, MarketOrder("SELL", 100))
        await wait_until(lambda: sell.isDone() and sell.fills
                         and sell.fills[0].commissionReport.commission)
        bought, sold = buy.fills[0].execution.price, sell.fills[0].execution.price
        realized = sell.fills[0].commissionReport.realizedPNL
        assert abs(realized - ((sold - bought) * 100 - 2.0)) < 1e-6  # two $1 commissions
        await wait_until(lambda: ib.positions() == [], what="flat position pushed")
        values = sim.broker.account_values()
        assert abs(values["TotalCashValue"] - (START_CASH + realized)) < 1e-6
        assert values["RealizedPnL"] == realized


async def test_orders_go_to_the_requested_account() -> None:
    accounts = ("DU1000001", "DU1000002")
    async with gateway(accounts=accounts) as sim, client(sim, account="DU1000002") as ib:
        assert ib.managedAccounts() == list(accounts)
        aapl = await qualified(ib)
        default = ib.placeOrder(aapl, MarketOrder("BUY", 1))
        second = ib.placeOrder(aapl, MarketOrder("BUY", 2, account="DU1000002"))
        await wait_until(lambda: default.isDone() and second.isDone())
        assert sim.broker.positions("DU1000001")[aapl.conId][0] == 1
        assert sim.broker.positions("DU1000002")[aapl.conId][0] == 2
        await wait_until(lambda: len(ib.positions()) == 2)
        assert {(p.account, p.position) for p in ib.positions()} == {
            ("DU1000001", 1.0), ("DU1000002", 2.0)}
        await ib.accountSummaryAsync()
        assert _summary(ib, "GrossPositionValue", "DU1000001") < _summary(
            ib, "GrossPositionValue", "DU1000002")
        # reqAccountUpdates was for DU1000002 (account= at connect): its portfolio only
        await wait_until(lambda: [p.position for p in ib.portfolio()] == [2.0])
        rejected = ib.placeOrder(aapl, LimitOrder("BUY", 1, 1.0, account="DU9999999"))
        await wait_until(rejected.isDone)
        assert rejected.log[-1].errorCode == 201


async def test_positions_request_and_account_updates_multi() -> None:
    async with gateway() as sim, client(sim, 4) as ib:
        aapl = await qualified(ib)
        trade = ib.placeOrder(aapl, MarketOrder("SELL", 25))
        await wait_until(trade.isDone)
        positions = await ib.reqPositionsAsync()
        assert [(p.contract.conId, p.position) for p in positions] == [(aapl.conId, -25.0)]
        await ib.reqAccountUpdatesMultiAsync("DU1234567")
        values = {v.tag: v.value for v in ib.accountValues() if v.currency == "USD"}
        assert float(values["StockMarketValue"]) < 0  # short
        assert abs(float(values["TotalCashValue"]) - sim.broker.account_values()[
            "TotalCashValue"]) < 0.01


async def test_portfolio_follows_the_market_between_fills() -> None:
    async with gateway() as sim, client(sim) as ib:
        sim.broker.feed.refresh_interval = 0.0  # IB: every 3 minutes
        aapl = await qualified(ib)
        trade = ib.placeOrder(aapl, MarketOrder("BUY", 10))
        await wait_until(trade.isDone)
        await wait_until(lambda: len(ib.portfolio()) == 1)
        before = ib.portfolio()[0].marketPrice
        sim.market.acquire(aapl.conId)
        try:
            step_until(sim, aapl.conId, lambda: sim.broker.price_of(aapl.conId) != before)
        finally:
            sim.market.release(aapl.conId)
        moved = sim.broker.price_of(aapl.conId)
        await wait_until(lambda: ib.portfolio()[0].marketPrice == moved, what="refresh")
        item = ib.portfolio()[0]
        assert abs(item.unrealizedPNL - 10 * (moved - item.averageCost)) < 1e-6
        values = {v.tag: float(v.value) for v in ib.accountValues()
                  if v.currency == "USD" and v.tag == "NetLiquidation"}
        assert abs(values["NetLiquidation"] - sim.broker.account_values()["NetLiquidation"]) \
            < 0.01
