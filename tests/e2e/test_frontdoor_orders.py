"""Front door: orders, positions and account data for ib_insync scripts.

Orders go through the hub's order path (journal, risk, pacing, ownership): the
simulator's book shows they reached the Gateway under the hub's order ids, while
the script sees openOrder/orderStatus/execDetails/commission under its own.
"""

from __future__ import annotations

from ibhub.hub.server import HubServer, attach_orders
from ibhub.protocol import GetOpenOrders, OrdersReply
from ibhub.sim import SimGateway
from tests.e2e import frontdoor_support
from tests.e2e.conftest import HubFactory
from tests.e2e.frontdoor_support import ClientFactory, door_of, priced_aapl, quiet_ib_insync
from tests.helpers import wait_until
from tests.ibclient import IB, LimitOrder, MarketOrder

# fixtures shared by the front-door tests
door_hub = frontdoor_support.door_hub
ib_clients = frontdoor_support.ib_clients



async def test_market_order_fills_with_the_scripts_own_ids(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway
) -> None:
    quiet_ib_insync()
    ib = await ib_clients(21)
    c = await priced_aapl(ib)
    seen: list[str] = []
    ib.openOrderEvent += lambda t: seen.append(f"openOrder {t.order.orderId}")
    ib.orderStatusEvent += lambda t: seen.append(f"orderStatus {t.orderStatus.status}")
    ib.execDetailsEvent += lambda t, f: seen.append(f"execDetails {f.execution.orderId}")
    ib.commissionReportEvent += lambda t, f, r: seen.append(f"commission {r.commission}")
    trade = ib.placeOrder(c, MarketOrder("BUY", 10))
    own_id = trade.order.orderId
    await wait_until(lambda: trade.isDone() and trade.fills
                     and trade.fills[0].commissionReport.execId, 10.0, "filled + commission")
    assert trade.orderStatus.status == "Filled"
    assert trade.orderStatus.filled == 10
    fill = trade.fills[0]
    assert fill.execution.orderId == own_id and fill.execution.clientId == 21
    assert fill.execution.side == "BOT" and fill.execution.shares == 10
    assert fill.commissionReport.commission > 0
    assert f"openOrder {own_id}" in seen and f"execDetails {own_id}" in seen
    assert any(s.startswith("commission") for s in seen)
    # the Gateway saw the hub's order (its own id space, the hub's client id)
    sim_orders = [o for o in hub_sim.broker.orders() if o.symbol == "AAPL"]
    assert len(sim_orders) == 1 and sim_orders[0].client_id == door_hub.settings.client_id
    hub_id = sim_orders[0].order_id
    # ...and the hub's journal/book owns it for this client id
    rec = door_hub.orders.book.store.get(hub_id)
    assert rec is not None and rec.owner == "tws-client-21" and rec.status == "Filled"
    # positions and account summary answer from the hub's cache
    await wait_until(lambda: any(p.contract.conId == c.conId and p.position == 10
                                 for p in ib.positions()), 10.0, "position streamed")
    fresh = await ib_clients(22)
    positions = await fresh.reqPositionsAsync()
    assert [(p.contract.conId, p.position) for p in positions] == [(c.conId, 10.0)]
    summary = await fresh.accountSummaryAsync()
    tags = {v.tag for v in summary}
    assert "NetLiquidation" in tags, sorted(tags)[:10]
    # reqExecutions of the owner shows the fill under its own id, not to another client
    fills = await ib.reqExecutionsAsync()
    assert [f.execution.orderId for f in fills] == [own_id]
    assert await fresh.reqExecutionsAsync() == []


async def test_limit_order_rests_and_is_cancelled(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway
) -> None:
    quiet_ib_insync()
    ib = await ib_clients(31)
    c = await priced_aapl(ib)
    bid = ib.ticker(c).bid
    trade = ib.placeOrder(c, LimitOrder("BUY", 5, round(bid * 0.97, 2)))
    await wait_until(lambda: trade.orderStatus.status == "Submitted", 10.0, "resting")
    assert any(o.status == "Submitted" for o in hub_sim.broker.orders())
    # modify: same order id, new price
    trade.order.lmtPrice = round(bid * 0.96, 2)
    ib.placeOrder(c, trade.order)
    await wait_until(lambda: any(abs((o.lmt_price or 0) - trade.order.lmtPrice) < 1e-9
                                 for o in hub_sim.broker.orders()), 10.0, "modified upstream")
    ib.cancelOrder(trade.order)
    await wait_until(trade.isDone, 10.0, "cancelled")
    assert trade.orderStatus.status == "Cancelled"
    assert all(o.status == "Cancelled" for o in hub_sim.broker.orders())


async def test_refused_order_is_an_error_on_its_id(ib_clients: ClientFactory) -> None:
    quiet_ib_insync()
    ib = await ib_clients(41)
    c = await priced_aapl(ib)
    errors: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda rid, code, msg, _c: errors.append((rid, code, msg))
    trade = ib.placeOrder(c, MarketOrder("BUY", 10_000_000))  # above the hub's limit
    await wait_until(trade.isDone, 5.0, "refused")
    assert trade.orderStatus.status == "Cancelled"
    assert any(rid == trade.order.orderId and code == 201 for rid, code, _ in errors), errors


async def test_disconnect_releases_lines_but_orders_stay(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway
) -> None:
    quiet_ib_insync()
    ib = await ib_clients(51)
    c = await priced_aapl(ib)
    bid = ib.ticker(c).bid
    trade = ib.placeOrder(c, LimitOrder("BUY", 3, round(bid * 0.95, 2)))
    await wait_until(lambda: trade.orderStatus.status == "Submitted", 10.0, "resting")
    assert hub_sim.market_data_subscriptions()
    ib.disconnect()
    await wait_until(lambda: not hub_sim.market_data_subscriptions(), 5.0, "line released")
    # the order still works, visible to an operator over the hub's order manager
    book = door_hub.orders.book
    reply = await book.open_orders(_operator(), GetOpenOrders(id=1, lease="op", scope="all"))
    assert isinstance(reply, OrdersReply)
    assert [o.owner for o in reply.orders] == ["tws-client-51"]
    # the same client id comes back and finds it under its own order id, and cancels it
    again = await ib_clients(51)
    await wait_until(lambda: again.openTrades(), 5.0, "open order listed at connect")
    t = again.openTrades()[0]
    assert t.order.orderId == trade.order.orderId
    again.cancelOrder(t.order)
    await wait_until(t.isDone, 10.0, "cancelled after reconnect")
    # completed orders (asked at every connect) list it with its final state
    done = await again.reqCompletedOrdersAsync(apiOnly=False)
    assert [(d.contract.conId, d.order.totalQuantity, d.orderStatus.status) for d in done] == [
        (c.conId, 3.0, "Cancelled")
    ]


def _operator():
    from ibhub.orders.manager import Caller
    from ibhub.orders.risk import Role

    return Caller("op", "operator", Role.OPERATOR)


async def test_bracket_order_is_one_hub_bracket(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway
) -> None:
    quiet_ib_insync()
    ib = await ib_clients(61)
    c = await priced_aapl(ib)
    bid = ib.ticker(c).bid
    trades = [ib.placeOrder(c, o) for o in ib.bracketOrder(
        "BUY", 4, round(bid * 0.97, 2), round(bid * 1.05, 2), round(bid * 0.90, 2))]
    parent, take_profit, stop_loss = trades
    await wait_until(lambda: parent.orderStatus.status == "Submitted", 10.0, "parent resting")
    await wait_until(lambda: len(hub_sim.broker.orders()) == 3, 10.0, "3 orders at the Gateway")
    sim_orders = hub_sim.broker.orders()
    [root] = [o for o in sim_orders if o.parent_id == 0]
    children = [o for o in sim_orders if o.parent_id == root.order_id]
    assert sorted(o.order_type for o in children) == ["LMT", "STP"]
    assert all(o.action == "SELL" and o.total_qty == 4 for o in children)
    [stp] = [o for o in children if o.order_type == "STP"]
    assert stp.aux_price == round(bid * 0.90, 2)
    # the hub journaled one bracket: parent plus children with client order ids .tp/.sl
    store = door_hub.orders.book.store
    recs = sorted((r for r in store.by_id.values() if r.owner == "tws-client-61"),
                  key=lambda r: r.order_id)
    assert [r.client_order_id.split(".")[-1] for r in recs][1:] == ["tp", "sl"]
    ib.cancelOrder(parent.order)
    await wait_until(lambda: all(t.isDone() for t in trades), 10.0, "family cancelled")
    assert {t.order.orderId for t in trades} == {parent.order.orderId,
                                                 take_profit.order.orderId,
                                                 stop_loss.order.orderId}


async def test_working_order_survives_a_hub_restart(
    make_hub: HubFactory, hub_sim: SimGateway
) -> None:
    """The journal keeps the order; the restarted hub's front door shows it to the same
    client id under the order id the script gave it."""
    quiet_ib_insync()
    first = await make_hub(tws_port=0)
    svc = await attach_orders(first, journal_sync="NORMAL")
    await wait_until(svc.reconciled.is_set, 5.0, "orders reconciled")
    ib = IB()
    await ib.connectAsync("127.0.0.1", door_of(first).tws_port, clientId=77, timeout=5)
    c = await priced_aapl(ib)
    trade = ib.placeOrder(c, LimitOrder("SELL", 2, round(ib.ticker(c).ask * 1.05, 2)))
    await wait_until(lambda: trade.orderStatus.status == "Submitted", 10.0, "resting")
    ib.disconnect()
    await first.stop()

    second = await make_hub(tws_port=0)
    svc2 = await attach_orders(second, journal_sync="NORMAL")
    await wait_until(svc2.reconciled.is_set, 5.0, "orders reconciled after restart")
    again = IB()
    try:
        await again.connectAsync("127.0.0.1", door_of(second).tws_port, clientId=77, timeout=5)
        await wait_until(lambda: again.openTrades(), 5.0, "order listed after the restart")
        t = again.openTrades()[0]
        assert t.order.orderId == trade.order.orderId and t.order.totalQuantity == 2
        assert again.client._reqIdSeq > trade.order.orderId  # nextValidId above it
        again.cancelOrder(t.order)
        await wait_until(t.isDone, 10.0, "cancelled through the restarted hub")
    finally:
        again.disconnect()
