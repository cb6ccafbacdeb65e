"""Front door: nothing silent on the order path.

OCA groups, order refs and algo fields of an unmodified ib_insync script reach the
Gateway and come back to the script; an attribute the hub does not honour is refused
with an error on the order id that names it (the order is never placed without it),
and the session goes on.
"""

from __future__ import annotations

import pytest

from ibhub.hub.server import HubServer
from ibhub.sim import SimGateway
from tests.e2e import frontdoor_support
from tests.e2e.frontdoor_support import ClientFactory, priced_aapl, quiet_ib_insync
from tests.helpers import wait_until
from tests.ibclient import LimitOrder, MarketOrder, PriceCondition, TagValue

pytestmark = pytest.mark.timeout(60)

door_hub = frontdoor_support.door_hub
ib_clients = frontdoor_support.ib_clients



def _sim_orders(sim: SimGateway, symbol: str = "AAPL") -> list:
    return [o for o in sim.broker.orders() if o.symbol == symbol]


async def test_oca_group_fill_cancels_the_other_order(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway
) -> None:
    quiet_ib_insync()
    ib = await ib_clients(61)
    c = await priced_aapl(ib)
    low = round(ib.ticker(c).bid * 0.95, 2)
    a = ib.placeOrder(c, LimitOrder("BUY", 3, low, ocaGroup="exit", ocaType=1))
    b = ib.placeOrder(c, LimitOrder("BUY", 3, low, ocaGroup="exit", ocaType=1))
    await wait_until(lambda: a.orderStatus.status == b.orderStatus.status == "Submitted",
                     10.0, "both resting")
    # at the Gateway both are in one group, named per script by the hub
    groups = {(o.oca_group, o.oca_type) for o in _sim_orders(hub_sim)}
    assert len(groups) == 1
    [(group, oca_type)] = groups
    assert oca_type == 1 and group.endswith("exit") and group != "exit"
    # one becomes marketable: it fills and the Gateway cancels the other
    a.order.lmtPrice = round(ib.ticker(c).ask * 1.02, 2)
    ib.placeOrder(c, a.order)
    await wait_until(lambda: a.isDone() and b.isDone(), 10.0, "fill and OCA cancel")
    assert (a.orderStatus.status, b.orderStatus.status) == ("Filled", "Cancelled")
    assert a.orderStatus.filled == 3 and b.orderStatus.filled == 0
    assert hub_sim.broker.positions()[c.conId][0] == 3  # one order's quantity, not two
    await wait_until(lambda: any(p.contract.conId == c.conId and p.position == 3
                                 for p in ib.positions()), 10.0, "position streamed")
    # the hub's journal agrees, and shows the group as the script named it
    book = door_hub.orders.book
    recs = [r for r in book.store.by_id.values() if r.owner == "tws-client-61"]
    assert sorted(r.status for r in recs) == ["Cancelled", "Filled"]
    assert {(r.oca_group, r.oca_type) for r in recs} == {("exit", 1)}


async def test_order_ref_and_algo_come_back_to_the_script(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway
) -> None:
    quiet_ib_insync()
    ib = await ib_clients(62)
    c = await priced_aapl(ib)
    low = round(ib.ticker(c).bid * 0.95, 2)
    params = [TagValue("adaptivePriority", "Patient")]
    resting = ib.placeOrder(c, LimitOrder("BUY", 2, low, orderRef="strat-7",
                                          algoStrategy="Adaptive", algoParams=params))
    filled = ib.placeOrder(c, MarketOrder("BUY", 1, orderRef="strat-8"))
    await wait_until(lambda: resting.orderStatus.status == "Submitted" and filled.isDone()
                     and filled.fills, 10.0, "resting + filled")
    # the openOrder the hub re-encoded carried the script's ref (ib_insync copies it)
    assert resting.order.orderRef == "strat-7" and filled.order.orderRef == "strat-8"
    assert filled.fills[0].execution.orderRef == "strat-8"
    # the Gateway got the algo unchanged (and the hub's own orderRef)
    [up] = [o for o in _sim_orders(hub_sim) if o.status == "Submitted"]
    assert up.algo_strategy == "Adaptive" and up.algo_params == (("adaptivePriority", "Patient"),)
    assert up.order_ref.startswith("ibhub1:")
    # a fresh session of the same client id decodes everything from the wire
    ib.disconnect()
    again = await ib_clients(62)
    [trade] = again.openTrades()
    o = trade.order
    assert o.orderRef == "strat-7" and o.algoStrategy == "Adaptive"
    assert [(p.tag, p.value) for p in o.algoParams] == [("adaptivePriority", "Patient")]
    fills = await again.reqExecutionsAsync()
    assert [f.execution.orderRef for f in fills] == ["strat-8"]
    completed = await again.reqCompletedOrdersAsync(apiOnly=True)
    assert [t.order.orderRef for t in completed] == ["strat-8"]


async def test_an_unhonoured_attribute_is_refused_naming_it(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway
) -> None:
    quiet_ib_insync()
    ib = await ib_clients(63)
    c = await priced_aapl(ib)
    errors: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda rid, code, msg, _c: errors.append((rid, code, msg))
    conditioned = MarketOrder("BUY", 1)
    conditioned.conditions = [PriceCondition(conId=c.conId, exch="SMART", price=1.0)]
    hedged = MarketOrder("BUY", 1, hedgeType="D", hedgeParam="0.5")
    etrade = MarketOrder("BUY", 1, eTradeOnly=True)
    trades = [ib.placeOrder(c, o) for o in (conditioned, hedged, etrade)]
    await wait_until(lambda: all(t.isDone() for t in trades), 10.0, "refused")
    by_id = {rid: (code, msg) for rid, code, msg in errors}
    code, msg = by_id[trades[0].order.orderId]
    assert code == 320 and "'conditions'" in msg and "order conditions" in msg
    code, msg = by_id[trades[1].order.orderId]
    assert code == 320 and "'hedgeType'" in msg
    assert by_id[trades[2].order.orderId] == (
        10268, "The 'EtradeOnly' order attribute is not supported.")
    assert all(t.orderStatus.status == "Cancelled" for t in trades)
    assert _sim_orders(hub_sim) == []  # nothing reached the Gateway
    # the session goes on: a plain order fills
    plain = ib.placeOrder(c, MarketOrder("BUY", 1))
    await wait_until(lambda: plain.isDone(), 10.0, "plain order")
    assert plain.orderStatus.status == "Filled"


async def test_a_modify_may_not_change_the_oca_group(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway
) -> None:
    quiet_ib_insync()
    ib = await ib_clients(64)
    c = await priced_aapl(ib)
    errors: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda rid, code, msg, _c: errors.append((rid, code, msg))
    order = LimitOrder("BUY", 2, round(ib.ticker(c).bid * 0.95, 2), ocaGroup="g1", ocaType=1)
    trade = ib.placeOrder(c, order)
    await wait_until(lambda: trade.orderStatus.status == "Submitted", 10.0, "resting")
    order.ocaGroup = "g2"
    ib.placeOrder(c, order)
    await wait_until(lambda: any(rid == order.orderId for rid, _, _ in errors), 10.0, "refusal")
    [(_, code, msg)] = [e for e in errors if e[0] == order.orderId]
    assert code == 399 and "ocaGroup" in msg
    [up] = _sim_orders(hub_sim)
    assert up.oca_group.endswith("g1") and up.status == "Submitted"
    # a modification adding an attribute the hub does not honour: refused as a warning,
    # so the script's trade does not end while the order works at the Gateway
    order.ocaGroup = "g1"
    order.hidden = True
    ib.placeOrder(c, order)
    await wait_until(lambda: len([e for e in errors if e[0] == order.orderId]) == 2, 10.0,
                     "second refusal")
    _, code, msg = errors[-1]
    assert code == 399 and "'hidden'" in msg
    # (ib_async marks the trade ValidationError on a warning about it; it still works)
    assert not trade.isDone() and trade.orderStatus.status in ("Submitted", "ValidationError")
    assert up.status == "Submitted" and up.request is not None and not up.request.hidden
