"""Nothing about an order reaches the Gateway before the order itself.

Scripts place resting (or marketable) limit orders and cancel each right after its
acknowledgement, a dozen in a burst, some while another script subscribes to twenty
symbols (so the pacer is busy). The simulator's own book is the truth: after the
burst no order works there, every order the hub calls Cancelled is Cancelled there
too (or never reached it), and the simulator's position equals the journal's fills.
The same through the TWS front door with an unmodified ib_insync script.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from ibhub.client import AsyncHub, Order, OrderRejectedError
from ibhub.hub.server import HubServer
from ibhub.orders.journal import OrderRecord
from ibhub.orders.store import TERMINAL
from ibhub.protocol import RejectReason
from ibhub.sim import SimGateway
from tests.e2e import frontdoor_support
from tests.e2e.frontdoor_support import ClientFactory, quiet_ib_insync
from tests.e2e.test_orders_hub import PLACE_ORDER
from tests.e2e.test_sdk_orders import AAPL, order_hub, resting_buy_price, sdk
from tests.helpers import wait_until
from tests.ibclient import LimitOrder, Stock

pytestmark = pytest.mark.timeout(90)

__all__ = ["order_hub"]  # fixture re-used from test_sdk_orders
door_hub = frontdoor_support.door_hub
ib_clients = frontdoor_support.ib_clients

BURST = 12
SYMBOLS = ("AAPL", "MSFT", "TSLA", "NVDA", "AMZN", "GOOGL", "META", "AMD", "NFLX", "JPM",
           "XOM", "BAC", "INTC", "KO", "PEP", "WMT", "DIS", "IBM", "CSCO", "V")  # fmt: skip
NOT_SENT = "before it was sent to the Gateway"


async def settled(hub: HubServer, sim: SimGateway) -> None:
    """Wait until the hub has nothing about orders left to send and the simulator has
    read every placeOrder the hub wrote."""
    book = hub.orders.book
    pacer = hub.pacer
    assert pacer is not None
    await wait_until(lambda: pacer.queued == 0 and not book.queued, 10.0, "order sends drained")

    def sent() -> int:
        return sum(1 for r in book.store.by_id.values() if r.sent)

    await wait_until(lambda: sim.request_counts[PLACE_ORDER] >= sent(), 10.0,
                     "the simulator read every placeOrder")  # fmt: skip


def check_against_gateway(sim: SimGateway, recs: Sequence[OrderRecord]) -> None:
    """Every order the hub ended agrees with the simulator's book."""
    sim_orders = {o.order_id: o for o in sim.broker.orders()}
    working = [o.order_id for o in sim_orders.values() if o.status not in TERMINAL]
    assert working == [], f"orders working at the Gateway: {working}"
    for rec in recs:
        assert rec.status in TERMINAL, (rec.order_id, rec.status)
        at_gw = sim_orders.get(rec.order_id)
        if at_gw is None:
            assert not rec.sent and rec.status == "Cancelled" and NOT_SENT in rec.message, rec
            assert rec.filled == 0
        else:
            assert at_gw.status == rec.status, (rec.order_id, at_gw.status, rec.status)
            assert at_gw.filled == pytest.approx(rec.filled), rec.order_id
    position = sim.broker.positions().get(AAPL, (0.0, 0.0))[0]
    journal_fills = sum(r.filled if r.action == "BUY" else -r.filled for r in recs)
    assert position == pytest.approx(journal_fills)


async def burst(hub: AsyncHub, price: float) -> list[Order]:
    async def one() -> Order:
        order = await hub.place_order("AAPL", "BUY", 1, order_type="LMT", limit_price=price)
        try:
            await hub.cancel_order(order)  # right after the ack
        except OrderRejectedError as exc:  # a marketable order sent at once may fill first
            assert exc.reason == RejectReason.ORDER_DONE, exc
        return order

    orders = await asyncio.gather(*(one() for _ in range(BURST)))
    for order in orders:
        await order.wait_done(10.0)
    return orders


async def _cancel_burst(order_hub: HubServer, hub_sim: SimGateway, price: float,
                        subscriber: bool) -> list[Order]:
    async with sdk(order_hub, "canceller") as hub, sdk(order_hub, "watcher") as other:
        if subscriber:
            subs = asyncio.gather(*(other.subscribe(s) for s in SYMBOLS))
            orders, _ = await asyncio.gather(burst(hub, price), subs)
        else:
            orders = await burst(hub, price)
        await settled(order_hub, hub_sim)
        store = order_hub.orders.book.store
        recs = [store.get(o.order_id) for o in orders]
        assert all(r is not None for r in recs)
        check_against_gateway(hub_sim, recs)
        for order, rec in zip(orders, recs, strict=True):
            assert rec is not None and order.status == rec.status and order.filled == rec.filled
        unsent = sum(1 for r in recs if r is not None and not r.sent)
        print(f"{unsent} of {len(recs)} orders were withdrawn before they were sent")
        # a second cancel of an ended order is refused as such
        for order in orders:
            with pytest.raises(OrderRejectedError) as err:
                await hub.cancel_order(order)
            assert err.value.reason == RejectReason.ORDER_DONE
        return orders


async def test_cancel_after_ack_never_overtakes_its_order(
    order_hub: HubServer, hub_sim: SimGateway
) -> None:
    orders = await _cancel_burst(order_hub, hub_sim, resting_buy_price(hub_sim), False)
    assert all(o.status == "Cancelled" and o.cancelled for o in orders)


async def test_cancel_burst_while_another_script_subscribes(
    order_hub: HubServer, hub_sim: SimGateway
) -> None:
    orders = await _cancel_burst(order_hub, hub_sim, resting_buy_price(hub_sim), True)
    assert all(o.status == "Cancelled" for o in orders)


@pytest.mark.parametrize("subscriber", [False, True], ids=["alone", "with-subscriber"])
async def test_marketable_orders_cancelled_before_sent_never_fill(
    order_hub: HubServer, hub_sim: SimGateway, subscriber: bool
) -> None:
    price = round(hub_sim.broker.price_of(AAPL) * 1.03, 2)  # above the ask: fills on arrival
    orders = await _cancel_burst(order_hub, hub_sim, price, subscriber)
    # some filled on arrival (sent before their cancel), the rest never left the hub
    assert all(o.status in ("Filled", "Cancelled") for o in orders)
    assert all(o.filled == 0 for o in orders if o.status == "Cancelled")


async def test_front_door_cancel_right_after_place(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway
) -> None:
    quiet_ib_insync()
    ib = await ib_clients(71)
    c = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    price = resting_buy_price(hub_sim)
    trades = []
    for _ in range(BURST):  # pipelined: each cancel follows its placeOrder on the socket
        trade = ib.placeOrder(c, LimitOrder("BUY", 1, price))
        ib.cancelOrder(trade.order)
        trades.append(trade)
    await wait_until(lambda: all(t.isDone() for t in trades), 15.0, "every trade done")
    await settled(door_hub, hub_sim)
    store = door_hub.orders.book.store
    recs = [r for r in store.by_id.values() if r.owner == "tws-client-71"]
    assert len(recs) == BURST
    check_against_gateway(hub_sim, recs)
    assert all(t.orderStatus.status == "Cancelled" for t in trades)
    assert all(r.status == "Cancelled" for r in recs)
    # The front door serves a connection's requests in order, so a cancelOrder read with
    # its placeOrder is handled the moment the placement was answered, before it was even
    # queued in the pacer (the pacer never saw those it withdrew: ``withdrawn`` counts
    # only queued items). All 24 messages are written before the hub reads, so normally
    # all 12 are withdrawn like that and IB sees none.
    unsent = [r for r in recs if not r.sent]
    assert all(NOT_SENT in r.message for r in unsent)
    pacer = door_hub.pacer
    assert pacer is not None
    in_the_window = len(unsent) - pacer.withdrawn
    print(f"{len(unsent)} of {BURST} withdrawn before they were sent, "
          f"{in_the_window} of them before they were queued")
    assert in_the_window >= 1
