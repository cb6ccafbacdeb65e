"""Front door: a portfolio monitor over two managed accounts, with unmodified ib_insync /
ib_async.

The script sees both accounts, IB's account summary (one row per account per tag, the
$LEDGER forms by currency) and account values (reqAccountUpdatesMulti) that keep
updating after a fill, PnL per account and per
position served from the hub's shared subscriptions (however many scripts ask, one
upstream subscription each), and each account's portfolio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from ibhub.hub.server import HubServer
from ibhub.sim import SimConfig, SimGateway
from tests.e2e import frontdoor_support
from tests.e2e.conftest import SEED
from tests.e2e.frontdoor_support import ClientFactory, priced_aapl, quiet_ib_insync
from tests.helpers import wait_until
from tests.ibclient import IB, MarketOrder

pytestmark = pytest.mark.timeout(60)

door_hub = frontdoor_support.door_hub
ib_clients = frontdoor_support.ib_clients
ACCOUNTS = ("DU111", "DU222")


def summary(ib: IB) -> list[Any]:
    """The rows the library holds (``accountSummary()`` would block the running loop)."""
    return list(ib.wrapper.acctSummary.values())


@pytest.fixture
async def hub_sim() -> AsyncIterator[SimGateway]:
    """The e2e simulator with two managed accounts (overrides conftest's)."""
    print(f"sim seed {SEED}")
    cfg = SimConfig(host="127.0.0.1", port=0, seed=SEED, tick_rate=40.0, accounts=ACCOUNTS)
    async with SimGateway(cfg) as gw:
        yield gw


async def test_portfolio_monitor_with_two_accounts(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway
) -> None:
    quiet_ib_insync()
    hub_sim.broker.pnl.interval = 0.05
    trader = await ib_clients(41)
    monitor = await ib_clients(42)
    assert monitor.managedAccounts() == list(ACCOUNTS)
    c = await priced_aapl(trader)

    # the summary: IB's rows, per account, with the $LEDGER forms
    await monitor.reqAccountSummaryAsync()  # every tag and $LEDGER:ALL, as ib_insync asks
    rows = summary(monitor)
    net = sorted((v.account, v.currency) for v in rows if v.tag == "NetLiquidation")
    assert net == [("DU111", "USD"), ("DU222", "USD")]
    cash = {(v.account, v.currency) for v in rows if v.tag == "CashBalance"}
    assert cash == {(a, cur) for a in ACCOUNTS for cur in ("BASE", "USD")}
    before = {v.account: float(v.value) for v in rows if v.tag == "GrossPositionValue"}
    assert before == {"DU111": 0.0, "DU222": 0.0}

    pnl = monitor.reqPnL("DU222")
    also = trader.reqPnL("DU222")  # a second script: the same upstream subscription
    await wait_until(lambda: pnl.unrealizedPnL == 0.0 and also.unrealizedPnL == 0.0, 10.0,
                     "first PnL")

    buy = trader.placeOrder(c, MarketOrder("BUY", 7, account="DU222"))
    await wait_until(lambda: buy.isDone(), 10.0, "fill")
    # the summary keeps updating (it answered once and stopped before)
    await wait_until(lambda: any(v.account == "DU222" and v.tag == "GrossPositionValue"
                                 and float(v.value) > 0 for v in summary(monitor)),
                     10.0, "summary update after the fill")
    assert all(float(v.value) == 0 for v in summary(monitor)
               if v.account == "DU111" and v.tag == "GrossPositionValue")
    # so do the account values of ib_insync's per-account reqAccountUpdatesMulti
    await wait_until(lambda: any(v.account == "DU222" and v.tag == "GrossPositionValue"
                                 and float(v.value) > 0 for v in monitor.accountValues()),
                     10.0, "accountUpdateMulti after the fill")

    single = monitor.reqPnLSingle("DU222", "", c.conId)
    await wait_until(lambda: single.position == 7 and single.value > 0, 10.0, "pnlSingle")
    price = hub_sim.broker.price_of(c.conId)
    assert single.value == pytest.approx(7 * price, rel=0.01)
    await wait_until(lambda: pnl.unrealizedPnL != 0.0 or pnl.dailyPnL != 0.0, 10.0,
                     "account PnL after the fill")
    upstream = [k for k in door_hub.orders.gateway.account_feed._ib.wrapper.pnlKey2ReqId
                if k[0] == "DU222"]
    assert upstream == [("DU222", "")]  # one upstream subscription for both scripts

    # the account's portfolio (the monitor follows DU222)
    await monitor.reqAccountUpdatesAsync("DU222")
    await wait_until(lambda: any(i.account == "DU222" and i.position == 7
                                 for i in monitor.portfolio()), 10.0, "DU222 portfolio")
    [item] = [i for i in monitor.portfolio() if i.account == "DU222"]
    assert item.marketValue == pytest.approx(7 * price, rel=0.01)
    assert {p.account for p in monitor.positions()} == {"DU222"}

    # an account that is not managed: IB's 321 on the request id
    errors: list[tuple[int, int]] = []
    monitor.errorEvent += lambda rid, code, _m, _c: errors.append((rid, code))
    monitor.reqPnL("DU999")
    await wait_until(lambda: any(code == 321 for _, code in errors), 10.0, "321")
    monitor.cancelPnL("DU222")
    monitor.cancelPnLSingle("DU222", "", c.conId)
