"""reqPnL / reqPnLSingle in the simulated Gateway, with two accounts, over the TWS wire.

Each account has its own positions and P&L; the figures follow fills at once and prices
as the walk moves; an unknown account or contract is refused with IB's error.
"""

from __future__ import annotations

import pytest

from tests.ibclient import MarketOrder
from tests.sim.broker_support import client, gateway, qualified, step_until, wait_until

ACCOUNTS = ("DU111", "DU222")


async def test_pnl_per_account_and_position_follows_fills_and_prices() -> None:
    async with gateway(accounts=ACCOUNTS) as sim, client(sim) as ib:
        assert ib.managedAccounts() == list(ACCOUNTS)
        aapl = await qualified(ib)
        con = aapl.conId
        first = ib.reqPnL("DU111")
        second = ib.reqPnL("DU222")
        single = ib.reqPnLSingle("DU111", "", con)
        await wait_until(lambda: first.unrealizedPnL == 0.0 and single.position == 0.0,
                         what="first figures")
        buy = ib.placeOrder(aapl, MarketOrder("BUY", 10, account="DU111"))
        sell = ib.placeOrder(aapl, MarketOrder("SELL", 4, account="DU222"))
        await wait_until(lambda: buy.isDone() and sell.isDone(), what="fills")
        await wait_until(lambda: single.position == 10, what="pnlSingle after the fill")
        assert sim.broker.positions("DU111")[con][0] == 10
        assert sim.broker.positions("DU222")[con][0] == -4
        sim.broker.pnl.interval = 0.0  # every price step, for the test
        step_until(sim, con, lambda: abs(sim.broker.price_of(con) - buy.fills[0].execution.price)
                   > 0.05)
        sim.market.step(con)
        price = sim.broker.price_of(con)
        avg = sim.broker.positions("DU111")[con][1]  # IB's average cost: commission included
        await wait_until(lambda: single.value == pytest.approx(10 * price, abs=0.01),
                         what="value follows the price")
        assert single.unrealizedPnL == pytest.approx(10 * (price - avg), abs=0.02)
        assert first.unrealizedPnL == pytest.approx(single.unrealizedPnL, abs=0.02)
        # the other account has its own P&L (short 4)
        assert second.unrealizedPnL == pytest.approx(
            -4 * (price - sim.broker.positions("DU222")[con][1]), abs=0.05)
        assert first.dailyPnL == pytest.approx(first.unrealizedPnL + first.realizedPnL,
                                               abs=0.02)
        # closing realizes it
        close = ib.placeOrder(aapl, MarketOrder("SELL", 10, account="DU111"))
        await wait_until(close.isDone, what="close")
        await wait_until(lambda: single.position == 0 and single.unrealizedPnL == 0.0,
                         what="flat")
        assert single.realizedPnL != 0.0 and first.realizedPnL == single.realizedPnL
        ib.cancelPnL("DU111")
        ib.cancelPnLSingle("DU111", "", con)


async def test_unknown_account_or_contract_is_refused() -> None:
    async with gateway(accounts=ACCOUNTS) as sim, client(sim) as ib:
        errors: list[tuple[int, int]] = []
        ib.errorEvent += lambda rid, code, *_: errors.append((rid, code))
        ib.reqPnL("DU999")
        ib.reqPnLSingle("DU111", "", 999999999)
        await wait_until(lambda: len(errors) == 2, what="two errors")
        assert sorted(code for _, code in errors) == [200, 321]
        assert sim.broker.pnl._subs == {}
