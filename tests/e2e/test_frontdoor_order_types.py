"""Front door: order types beyond MKT/LMT/STP from an unmodified ib_insync / ib_async script.

A bracket-order strategy (a LMT entry, a take-profit LMT and a STP LMT stop-loss, sent
held and transmitted by the last leg), TRAIL by percent, TRAIL LIMIT, MIT, REL, GTD and
MOC reach the Gateway with IB's fields and come back in openOrder; a field that does not
fit the order type is refused on the order id naming it; a changed trailing amount on a
modify is refused, never ignored.
"""

from __future__ import annotations

import datetime as dt

import pytest

from ibhub.hub.server import HubServer
from ibhub.sim import SimGateway
from tests.e2e import frontdoor_support
from tests.e2e.frontdoor_support import ClientFactory, priced_aapl, quiet_ib_insync
from tests.helpers import wait_until
from tests.ibclient import LimitOrder, Order, StopLimitOrder

pytestmark = pytest.mark.timeout(60)

door_hub = frontdoor_support.door_hub
ib_clients = frontdoor_support.ib_clients


async def test_bracket_with_a_stop_limit_stop_loss(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway
) -> None:
    """The bracket-order strategy script: entry at the ask, exits around it."""
    quiet_ib_insync()
    ib = await ib_clients(71)
    c = await priced_aapl(ib)
    t = ib.ticker(c)
    entry_px, tp_px = round(t.ask * 1.01, 2), round(t.ask * 1.05, 2)
    stop_px, stop_lmt = round(t.bid * 0.96, 2), round(t.bid * 0.95, 2)
    parent = LimitOrder("BUY", 5, entry_px, orderId=ib.client.getReqId(), transmit=False)
    tp = LimitOrder("SELL", 5, tp_px, orderId=ib.client.getReqId(), parentId=parent.orderId,
                    transmit=False)
    sl = StopLimitOrder("SELL", 5, stop_lmt, stop_px, orderId=ib.client.getReqId(),
                        parentId=parent.orderId, transmit=True)
    trades = [ib.placeOrder(c, o) for o in (parent, tp, sl)]
    await wait_until(lambda: trades[0].orderStatus.status == "Filled"
                     and all(x.orderStatus.status == "Submitted" for x in trades[1:]),
                     10.0, "entry filled, exits working")
    up = {o.order_type: o for o in hub_sim.broker.orders() if o.symbol == "AAPL"}
    assert (up["STP LMT"].aux_price, up["STP LMT"].lmt_price) == (stop_px, stop_lmt)
    assert up["STP LMT"].action == "SELL" and up["LMT"].total_qty == 5
    # the script's trades carry its ids and the legs' prices (openOrder re-encoded)
    assert trades[2].order.orderType == "STP LMT" and trades[2].order.lmtPrice == stop_lmt
    assert trades[2].order.auxPrice == stop_px
    ib.cancelOrder(tp)
    ib.cancelOrder(sl)
    await wait_until(lambda: trades[1].isDone() and trades[2].isDone(), 10.0, "exits cancelled")


async def test_trailing_if_touched_relative_gtd_and_at_close_orders(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway
) -> None:
    quiet_ib_insync()
    ib = await ib_clients(72)
    c = await priced_aapl(ib)
    errors: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda rid, code, msg, _c: errors.append((rid, code, msg))
    bid = ib.ticker(c).bid
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).strftime("%Y%m%d-%H:%M:%S")
    orders = {
        "trail": Order(action="SELL", totalQuantity=1, orderType="TRAIL", trailingPercent=5.0),
        "trail_limit": Order(action="BUY", totalQuantity=1, orderType="TRAIL LIMIT",
                             auxPrice=2.0, lmtPriceOffset=0.1),
        "mit": Order(action="BUY", totalQuantity=1, orderType="MIT",
                     auxPrice=round(bid * 0.95, 2)),
        "rel": Order(action="BUY", totalQuantity=1, orderType="REL", auxPrice=0.0,
                     lmtPrice=round(bid * 0.95, 2)),
        "gtd": LimitOrder("BUY", 1, round(bid * 0.95, 2), tif="GTD", goodTillDate=later),
        "moc": Order(action="BUY", totalQuantity=2, orderType="MOC"),
    }
    trades = {k: ib.placeOrder(c, o) for k, o in orders.items()}
    bad = ib.placeOrder(c, LimitOrder("BUY", 1, round(bid * 0.95, 2), trailingPercent=1.0))
    await wait_until(lambda: bad.isDone() and all(
        t.orderStatus.status == "Submitted" for t in trades.values()), 10.0, "working")
    [(code, msg)] = [(code, msg) for rid, code, msg in errors if rid == bad.order.orderId]
    assert code == 201 and "trailing_percent is not used by a LMT order" in msg

    sim = {o.order_id: o for o in hub_sim.broker.orders()}
    hub_ids = door_hub.orders.book.store.by_id
    up = {}
    for key, trade in trades.items():
        [rec] = [r for r in hub_ids.values() if r.owner == "tws-client-72"
                 and (r.client_order_id or "").startswith(f"{trade.order.orderId}.")]
        up[key] = sim[rec.order_id]
    assert (up["trail"].order_type, up["trail"].trailing_percent) == ("TRAIL", 5.0)
    assert up["trail"].aux_price is None
    assert up["trail_limit"].aux_price == 2.0
    assert up["trail_limit"].request is not None
    assert up["trail_limit"].request.lmt_price_offset == 0.1
    assert (up["mit"].order_type, up["mit"].aux_price) == ("MIT", round(bid * 0.95, 2))
    assert (up["rel"].aux_price, up["rel"].lmt_price) == (0.0, round(bid * 0.95, 2))
    assert up["gtd"].tif == "GTD" and up["gtd"].request is not None
    assert up["gtd"].request.good_till_date == later
    # openOrder re-encoded for the script: IB's auxPrice is the trailing amount
    assert trades["trail_limit"].order.auxPrice == 2.0

    # a modify that changes the trailing amount is refused (399), the order works on
    tl = orders["trail_limit"]
    tl.auxPrice = 3.0
    ib.placeOrder(c, tl)
    await wait_until(lambda: any(rid == tl.orderId and code == 399 for rid, code, _ in errors),
                     10.0, "modify refused")
    assert up["trail_limit"].aux_price == 2.0 and not trades["trail_limit"].isDone()

    # the close fills the MOC through the hub
    assert hub_sim.broker.closing_auction(c.conId) == 1
    await wait_until(lambda: trades["moc"].isDone(), 10.0, "MOC filled")
    assert trades["moc"].orderStatus.status == "Filled" and trades["moc"].fills

    # a fresh session of the same client id decodes the working orders from the wire
    ib.disconnect()
    again = await ib_clients(72)
    open_by_type = {t.order.orderType: t.order for t in again.openTrades()}
    assert open_by_type["TRAIL"].trailingPercent == 5.0
    assert open_by_type["MIT"].auxPrice == round(bid * 0.95, 2)


async def test_what_if_through_the_front_door(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway
) -> None:
    quiet_ib_insync()
    ib = await ib_clients(73)
    c = await priced_aapl(ib)
    ask = ib.ticker(c).ask
    state = await ib.whatIfOrderAsync(c, LimitOrder("BUY", 50, round(ask, 2)))
    assert float(state.initMarginChange) > 0 and float(state.commission) > 0
    assert float(state.initMarginAfter) == pytest.approx(
        float(state.initMarginBefore) + float(state.initMarginChange), abs=0.01)
    trail = await ib.whatIfOrderAsync(c, Order(action="SELL", totalQuantity=5,
                                               orderType="TRAIL", trailingPercent=1.0))
    assert float(trail.maintMarginChange) != 0
    assert hub_sim.broker.orders() == [] and ib.openTrades() == []
    assert not [r for r in door_hub.orders.book.store.by_id.values()]
    # a refused what-if ends the request with the error (no hang) and places nothing
    errors: list[tuple[int, int]] = []
    ib.errorEvent += lambda rid, code, _m, _c: errors.append((rid, code))
    refused = await ib.whatIfOrderAsync(c, Order(action="BUY", totalQuantity=1,
                                                 orderType="TRAIL"))
    assert not refused  # ib_insync / ib_async answer a failed what-if with an empty state
    assert [code for _, code in errors] == [201]
    assert hub_sim.broker.orders() == []
