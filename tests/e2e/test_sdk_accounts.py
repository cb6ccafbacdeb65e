"""Several managed accounts through the hub and the SDK, against the simulated Gateway.

The simulator serves two paper accounts, each with its own positions and cash; the hub
follows both (values, positions, a portfolio valued from reqPnLSingle for each, PnL)
and serves IB's account summary with its $LEDGER semantics; orders take an ``account``
and the live-trading guard looks at the order's account.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from ibhub.client import OrderRejectedError
from ibhub.hub.server import HubServer
from ibhub.protocol import RejectReason
from ibhub.sim import SimConfig, SimGateway
from tests.e2e.conftest import SEED
from tests.e2e.test_sdk_orders import order_hub, sdk

pytestmark = pytest.mark.timeout(60)

__all__ = ["hub_sim", "order_hub"]

AAPL = 265598
ACCOUNTS = ("DU111", "DU222")


async def eventually(check: Callable[[], Awaitable[bool]], what: str,
                     timeout: float = 5.0) -> None:
    """Ask the hub again (``check``) until it says yes; fail naming ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def hub_sim() -> AsyncIterator[SimGateway]:
    """The e2e simulator with two managed accounts (overrides conftest's)."""
    print(f"sim seed {SEED}")
    cfg = SimConfig(host="127.0.0.1", port=0, seed=SEED, tick_rate=40.0, accounts=ACCOUNTS)
    async with SimGateway(cfg) as gw:
        yield gw


async def test_two_accounts_positions_portfolio_summary_and_pnl(
    order_hub: HubServer, hub_sim: SimGateway
) -> None:
    hub_sim.broker.pnl.interval = 0.05
    async with sdk(order_hub, "multi") as hub:
        first = await hub.place_order("AAPL", "BUY", 10, account="DU111")
        second = await hub.place_order("AAPL", "SELL", 3, account="DU222")
        await first.wait_done(5.0)
        await second.wait_done(5.0)
        at_sim = {o.order_id: o.account for o in hub_sim.broker.orders()}
        assert (at_sim[first.order_id], at_sim[second.order_id]) == ACCOUNTS

        async def positions(account: str) -> dict[int, float]:
            return {p.con_id: p.position for p in await hub.positions(account)}

        for account, qty in (("DU111", 10.0), ("DU222", -3.0)):
            async def held(account: str = account, qty: float = qty) -> bool:
                return (await positions(account)) == {AAPL: qty}
            await eventually(held, f"{account}'s position")

        # portfolio of both accounts, valued from each position's PnL
        async def portfolio_ready() -> bool:
            items = await hub.portfolio()
            return {(i.account, i.position) for i in items if math.isfinite(i.market_value)} \
                == {("DU111", 10.0), ("DU222", -3.0)}
        await eventually(portfolio_ready, "both portfolios valued")
        items = {i.account: i for i in await hub.portfolio()}
        price = hub_sim.broker.price_of(AAPL)
        assert items["DU111"].market_value == pytest.approx(10 * price, rel=0.01)
        assert items["DU222"].market_value == pytest.approx(-3 * price, rel=0.01)

        # account values of each account
        for account in ACCOUNTS:
            values = {v.key for v in await hub.account_values(account)}
            assert {"NetLiquidation", "BuyingPower"} <= values

        # IB's summary: one row per account for a plain tag, $LEDGER forms by currency
        rows = await hub.account_summary_rows(["NetLiquidation"])
        assert sorted((r.account, r.currency) for r in rows) == [("DU111", "USD"),
                                                                 ("DU222", "USD")]
        ledger = await hub.account_summary_rows(["$LEDGER"], account="DU111")
        assert ledger and {r.currency for r in ledger} == {"BASE"}
        assert "CashBalance" in {r.key for r in ledger}
        every = await hub.account_summary_rows(["$LEDGER:ALL"], account="DU111")
        assert {r.currency for r in every} == {"BASE", "USD"}
        usd = await hub.account_summary_rows(["$LEDGER:USD"], account="DU111")
        assert {r.currency for r in usd} == {"USD"}
        assert "NetLiquidation" not in {r.key for r in every}  # not a ledger tag
        mixed = await hub.account_summary_rows(["BuyingPower", "$LEDGER"], account="DU222")
        assert {(r.key, r.currency) for r in mixed if r.key == "BuyingPower"} == {
            ("BuyingPower", "USD")}

        # PnL per account and per position
        async def pnl_ready() -> bool:
            got = {(p.account, p.con_id): p for p in await hub.pnl()}
            return {("DU111", 0), ("DU222", 0), ("DU111", AAPL), ("DU222", AAPL)} <= set(got) \
                and got[("DU111", AAPL)].position == 10
        await eventually(pnl_ready, "PnL of both accounts and positions")
        got = {(p.account, p.con_id): p for p in await hub.pnl("DU222")}
        assert set(got) == {("DU222", 0), ("DU222", AAPL)}
        assert got[("DU222", AAPL)].position == -3
        # one price for both figures: the market holds still, then takes one step
        hub_sim.set_tick_rate(0)
        hub_sim.broker.pnl.interval = 0.0
        hub_sim.market.step(AAPL)
        mark = hub_sim.broker.pnl.figures("DU222", AAPL)

        async def same_price() -> bool:
            now = {(p.account, p.con_id): p for p in await hub.pnl("DU222")}
            single, whole = now[("DU222", AAPL)], now[("DU222", 0)]
            return single.unrealized == mark[2] and whole.unrealized == single.unrealized
        await eventually(same_price, "account and position PnL at one price")


async def test_the_live_guard_looks_at_the_orders_account(
    order_hub: HubServer, hub_sim: SimGateway
) -> None:
    async with sdk(order_hub, "guarded") as hub:
        with pytest.raises(OrderRejectedError) as info:
            await hub.place_order("AAPL", "BUY", 1, account="U7654321")
        assert info.value.reason == RejectReason.LIVE_TRADING
        assert "U7654321" in info.value.message
        with pytest.raises(OrderRejectedError) as info:
            await hub.what_if_order("AAPL", "BUY", 1, account="U7654321")
        assert info.value.reason == RejectReason.LIVE_TRADING
        assert hub_sim.broker.orders() == []
