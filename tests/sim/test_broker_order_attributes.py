"""OCA types, order refs and algo fields in the simulated Gateway, with unmodified ib_insync.

ocaType 1 cancels the group's other orders at the first fill (also a partial one); 2 and 3
reduce them by the filled quantity. orderRef, ocaGroup/ocaType and algoStrategy/algoParams
come back in openOrder and completedOrder (a fresh connection decodes them from the wire).
"""

from __future__ import annotations

from ibhub.sim.orders import parse_place_order
from tests.ibclient import LimitOrder, MarketOrder, TagValue
from tests.sim.broker_support import client, gateway, place_order_fields, qualified, wait_until


async def test_oca_type_1_cancels_the_others_at_a_partial_fill() -> None:
    async with gateway() as sim, client(sim) as ib:
        sim.broker.partial_fills = True
        aapl = await qualified(ib)
        q = sim.market.quote(aapl.conId)
        low = round(q.bid * 0.7, 2)
        resting = [ib.placeOrder(aapl, LimitOrder("BUY", 5, low, ocaGroup="g", ocaType=1))
                   for _ in range(2)]
        await wait_until(lambda: all(t.orderStatus.status == "Submitted" for t in resting))
        big = ib.placeOrder(aapl, LimitOrder("BUY", q.ask_size + 400, round(q.ask + 0.02, 2),
                                             ocaGroup="g", ocaType=1))
        await wait_until(lambda: big.orderStatus.filled == q.ask_size, what="partial fill")
        await wait_until(lambda: all(t.isDone() for t in resting), what="others cancelled")
        assert [t.orderStatus.status for t in resting] == ["Cancelled", "Cancelled"]
        assert big.orderStatus.status == "Submitted"  # the filling order keeps working
        assert sim.broker.positions()[aapl.conId][0] == q.ask_size


async def test_oca_type_2_reduces_the_others_by_the_fill() -> None:
    async with gateway() as sim, client(sim) as ib:
        aapl = await qualified(ib)
        q = sim.market.quote(aapl.conId)
        low = round(q.bid * 0.7, 2)
        same = ib.placeOrder(aapl, LimitOrder("BUY", 5, low, ocaGroup="r", ocaType=2))
        larger = ib.placeOrder(aapl, LimitOrder("BUY", 8, low, ocaGroup="r", ocaType=2))
        other_group = ib.placeOrder(aapl, LimitOrder("BUY", 5, low, ocaGroup="x", ocaType=2))
        await wait_until(lambda: larger.orderStatus.status == "Submitted")
        filled = ib.placeOrder(aapl, MarketOrder("BUY", 5, ocaGroup="r", ocaType=2))
        await wait_until(lambda: filled.isDone() and same.isDone(), what="reduction")
        assert filled.orderStatus.status == "Filled"
        assert same.orderStatus.status == "Cancelled"  # reduced to nothing
        await wait_until(lambda: larger.order.totalQuantity == 3, what="openOrder of the cut")
        assert larger.orderStatus.status == "Submitted" and larger.orderStatus.remaining == 3
        assert other_group.orderStatus.status == "Submitted"
        assert other_group.order.totalQuantity == 5


async def test_order_ref_oca_and_algo_come_back_in_open_and_completed_orders() -> None:
    async with gateway() as sim:
        async with client(sim, client_id=7) as ib:
            aapl = await qualified(ib)
            low = round(sim.market.quote(aapl.conId).bid * 0.7, 2)
            algo = [TagValue("adaptivePriority", "Patient"), TagValue("x", "1")]
            working = ib.placeOrder(aapl, LimitOrder(
                "BUY", 2, low, orderRef="mine-1", ocaGroup="grp", ocaType=3,
                algoStrategy="Adaptive", algoParams=algo))
            done = ib.placeOrder(aapl, LimitOrder("BUY", 1, low, orderRef="mine-2",
                                                  algoStrategy="Twap", algoParams=[]))
            await wait_until(lambda: done.orderStatus.status == "Submitted")
            await wait_until(lambda: working.orderStatus.status == "Submitted")
            ib.cancelOrder(done.order)
            await wait_until(done.isDone)
        async with client(sim, client_id=7) as again:  # decoded afresh from openOrder
            [trade] = again.openTrades()
            o = trade.order
            assert (o.orderRef, o.ocaGroup, o.ocaType) == ("mine-1", "grp", 3)
            assert o.algoStrategy == "Adaptive"
            assert [(p.tag, p.value) for p in o.algoParams] == [("adaptivePriority", "Patient"),
                                                                ("x", "1")]
            completed = await again.reqCompletedOrdersAsync(apiOnly=True)
            [c] = [t for t in completed if t.order.orderRef == "mine-2"]
            assert c.order.algoStrategy == "Twap" and c.orderStatus.status == "Cancelled"


def test_the_walk_names_every_field_it_reads() -> None:
    from tests.ibclient import PriceCondition, Stock

    contract = Stock("AAPL", "SMART", "USD")
    order = LimitOrder("BUY", 1, 10.0, orderRef="r", algoStrategy="Adaptive",
                       algoParams=[TagValue("adaptivePriority", "Normal")], algoId="a1",
                       hedgeType="D", hedgeParam="0.5")
    order.conditions = [PriceCondition(conId=1, exch="SMART", price=10.0)]
    req = parse_place_order(place_order_fields(contract, order, 5))
    seen = dict(req.attributes)
    assert req.algo_params == (("adaptivePriority", "Normal"),) and req.algo_id == "a1"
    assert seen["hedgeType"] == "D" and seen["hedgeParam"] == "0.5"
    assert seen["conditions"] == "1" and "condition type" not in seen
    # every slot after the conditions is where it belongs (nothing shifted)
    assert seen["usePriceMgmtAlgo"] == "0" and seen["autoCancelParent"] == "0"
    assert seen["exemptCode"] == "-1" and seen["openClose"] == "O"
