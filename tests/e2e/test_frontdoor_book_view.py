"""Front door: what a monitoring script sees of the book, and IB's 202 on a cancel.

With ``tws_master_client_id`` set (IB's "Master API client ID"), the script connected
with that id gets every order in reqAllOpenOrders / reqCompletedOrders / reqExecutions:
other TWS scripts' (under their client ids and order ids), ZeroMQ scripts' (under the
hub's client id and order id). Any other client id sees its own orders only. A cancel a
script asked for ends with the Cancelled status followed by IB's warning 202.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from ibhub.hub.server import HubServer, attach_orders
from ibhub.sim import SimGateway
from tests.e2e.conftest import HubFactory
from tests.e2e.frontdoor_support import door_of, priced_aapl, quiet_ib_insync
from tests.e2e.test_sdk_orders import sdk
from tests.helpers import wait_until
from tests.ibclient import IB, LimitOrder, MarketOrder

pytestmark = pytest.mark.timeout(60)

MASTER = 90


@pytest.fixture
async def master_hub(make_hub: HubFactory) -> HubServer:
    hub = await make_hub(tws_port=0, tws_master_client_id=MASTER)
    hub.orders = await attach_orders(hub, journal_sync="NORMAL")
    await wait_until(hub.orders.reconciled.is_set, 5.0, "orders reconciled")
    return hub


@contextlib.asynccontextmanager
async def tws(hub: HubServer, client_id: int) -> AsyncIterator[IB]:
    ib = IB()
    await ib.connectAsync("127.0.0.1", door_of(hub).tws_port, clientId=client_id, timeout=5)
    try:
        yield ib
    finally:
        ib.disconnect()


async def test_the_master_client_sees_the_whole_book(
    master_hub: HubServer, hub_sim: SimGateway
) -> None:
    quiet_ib_insync()
    async with tws(master_hub, 81) as trader, sdk(master_hub, "zmq-script") as script, \
            tws(master_hub, 82) as other, tws(master_hub, MASTER) as master:
        c = await priced_aapl(trader)
        low = round(trader.ticker(c).bid * 0.95, 2)
        resting = trader.placeOrder(c, LimitOrder("BUY", 2, low))
        bought = trader.placeOrder(c, MarketOrder("BUY", 1))
        theirs = await script.place_order("AAPL", "BUY", 3, order_type="LMT", limit_price=low)
        await theirs.wait_until(lambda o: o.status == "Submitted", 5.0)
        await wait_until(lambda: resting.orderStatus.status == "Submitted" and bought.fills
                         and bought.fills[0].commissionReport.commission > 0, 10.0, "orders")

        # another client id: its own orders only (none)
        assert await other.reqAllOpenOrdersAsync() == []
        assert await other.reqCompletedOrdersAsync(apiOnly=True) == []
        assert await other.reqExecutionsAsync() == []

        # the master: every working order, under its owner's client id and order id
        hub_cid = master_hub.orders.book.upstream_client_id
        working = await master.reqAllOpenOrdersAsync()
        seen = sorted((t.order.clientId, t.order.orderId, t.order.totalQuantity)
                      for t in working)
        assert seen == sorted([(81, resting.order.orderId, 2.0),
                               (hub_cid, theirs.order_id, 3.0)])
        completed = await master.reqCompletedOrdersAsync(apiOnly=True)
        # (a completedOrder carries no order or client id: the permId names it)
        assert [(t.order.permId, t.orderStatus.status) for t in completed] == [
            (bought.order.permId, "Filled")]
        fills = await master.reqExecutionsAsync()
        assert [(f.execution.clientId, f.execution.orderId, f.execution.shares)
                for f in fills] == [(81, bought.order.orderId, 1.0)]
        assert fills[0].commissionReport.commission > 0
        # the master's own reqOpenOrders stays its own (IB's semantics)
        assert await master.reqOpenOrdersAsync() == []

        # a cancel the script asked for: Cancelled, then IB's 202
        errors: list[tuple[int, int]] = []
        trader.errorEvent += lambda rid, code, _m, _c: errors.append((rid, code))
        trader.cancelOrder(resting.order)
        await wait_until(lambda: (resting.order.orderId, 202) in errors, 10.0, "error 202")
        assert resting.orderStatus.status == "Cancelled"
        assert [code for rid, code in errors if rid == resting.order.orderId] == [202]
