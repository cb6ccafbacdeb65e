"""Orders against the simulated Gateway with unmodified ib_insync over TCP."""

from __future__ import annotations

from ibhub.sim.orders import Status
from tests.ibclient import LimitOrder, MarketOrder, Order, StopOrder
from tests.sim.broker_support import client, gateway, qualified, step_until, wait_until


async def test_market_order_fills_with_execution_and_commission() -> None:
    async with gateway() as sim, client(sim, 3) as ib:
        aapl = await qualified(ib)
        ask = sim.market.quote(aapl.conId).ask
        trade = ib.placeOrder(aapl, MarketOrder("BUY", 100))
        await wait_until(trade.isDone, what="market order done")
        assert trade.orderStatus.status == "Filled"
        assert [e.status for e in trade.log] == ["PendingSubmit", "Submitted", "Submitted",
                                                 "Filled"]
        await wait_until(lambda: trade.fills and trade.fills[0].commissionReport.commission,
                         what="commission report")
        (fill,) = trade.fills
        assert fill.execution.shares == 100 and fill.execution.price == ask  # buy at the ask
        assert fill.execution.side == "BOT" and fill.execution.clientId == 3
        assert fill.commissionReport.commission == 1.0  # 100 x $0.005 -> the $1.00 minimum
        assert fill.commissionReport.currency == "USD"
        assert trade.orderStatus.avgFillPrice == ask and trade.orderStatus.remaining == 0
        (order,) = sim.broker.orders()
        assert (order.client_id, order.order_id, order.status) == (3, trade.order.orderId,
                                                                    "Filled")
        assert sim.broker.executions()[0].exec_id == fill.execution.execId


async def test_sell_market_order_fills_at_the_bid() -> None:
    async with gateway() as sim, client(sim) as ib:
        msft = await qualified(ib, "MSFT")
        bid = sim.market.quote(msft.conId).bid
        trade = ib.placeOrder(msft, MarketOrder("SELL", 10))
        await wait_until(trade.isDone)
        assert trade.orderStatus.status == "Filled" and trade.fills[0].execution.price == bid
        assert sim.broker.positions()[msft.conId][0] == -10


async def test_limit_order_rests_and_is_cancelled_with_202() -> None:
    async with gateway() as sim, client(sim) as ib:
        aapl = await qualified(ib)
        errors: list[tuple[int, int]] = []
        ib.errorEvent += lambda req_id, code, text, contract: errors.append((req_id, code))
        bid = sim.market.quote(aapl.conId).bid
        trade = ib.placeOrder(aapl, LimitOrder("BUY", 5, round(bid * 0.8, 2)))
        await wait_until(lambda: trade.orderStatus.status == "Submitted", what="resting")
        assert sim.broker.orders()[0].status == Status.SUBMITTED and not trade.fills
        ib.cancelOrder(trade.order)
        await wait_until(lambda: trade.orderStatus.status == "Cancelled", what="cancelled")
        await wait_until(lambda: (trade.order.orderId, 202) in errors, what="error 202")
        assert sim.broker.orders()[0].status == Status.CANCELLED
        assert sim.market.active.get(aapl.conId, 0) == 0  # the broker released the walk


async def test_modified_limit_order_fills() -> None:
    async with gateway() as sim, client(sim) as ib:
        aapl = await qualified(ib)
        quote = sim.market.quote(aapl.conId)
        order = LimitOrder("BUY", 20, round(quote.bid * 0.9, 2))
        trade = ib.placeOrder(aapl, order)
        await wait_until(lambda: trade.orderStatus.status == "Submitted")
        order.lmtPrice = round(quote.ask + 1.0, 2)  # now marketable: fills at the ask
        ib.placeOrder(aapl, order)
        await wait_until(trade.isDone, what="modified order filled")
        assert trade.orderStatus.status == "Filled"
        assert "Modify" in [e.message for e in trade.log]
        assert trade.fills[0].execution.price == quote.ask
        assert len(sim.broker.orders()) == 1  # a modification, not a second order


async def test_resting_limit_fills_when_the_walk_reaches_it() -> None:
    async with gateway() as sim, client(sim) as ib:
        aapl = await qualified(ib)
        bid = sim.market.quote(aapl.conId).bid
        limit = round(bid - 0.05, 2)
        trade = ib.placeOrder(aapl, LimitOrder("BUY", 7, limit))
        await wait_until(lambda: trade.orderStatus.status == "Submitted")
        assert sim.market.active.get(aapl.conId) == 1  # kept walking for the resting order
        step_until(sim, aapl.conId, lambda: sim.broker.orders()[0].status == Status.FILLED)
        await wait_until(trade.isDone, what="fill reported")
        assert trade.orderStatus.status == "Filled"
        assert trade.fills[0].execution.price == limit  # a resting limit fills at its limit


async def test_stop_order_triggers_on_the_last_price() -> None:
    async with gateway() as sim, client(sim) as ib:
        spy = await qualified(ib, "SPY")
        last = sim.market.quote(spy.conId).last
        trade = ib.placeOrder(spy, StopOrder("SELL", 3, round(last - 0.05, 2)))
        await wait_until(lambda: trade.orderStatus.status == "Submitted")
        step_until(sim, spy.conId, lambda: sim.broker.orders()[0].status == Status.FILLED)
        await wait_until(trade.isDone)
        fill_price = trade.fills[0].execution.price
        assert fill_price <= round(last - 0.05, 2) + 1e-9  # a triggered sell stop sells at the bid


async def test_absurd_quantity_is_rejected_with_201() -> None:
    async with gateway(max_order_qty=1000) as sim, client(sim) as ib:
        aapl = await qualified(ib)
        trade = ib.placeOrder(aapl, MarketOrder("BUY", 5000))
        await wait_until(trade.isDone, what="rejection")
        assert trade.orderStatus.status == "Cancelled"
        assert trade.log[-1].errorCode == 201 and "Order rejected" in trade.log[-1].message
        assert sim.broker.orders() == [] and sim.broker.executions() == []


async def test_unknown_contract_gets_200() -> None:
    async with gateway() as sim, client(sim) as ib:
        from tests.ibclient import Stock

        trade = ib.placeOrder(Stock("NOPE", "SMART", "USD"), MarketOrder("BUY", 1))
        await wait_until(trade.isDone)
        assert trade.log[-1].errorCode == 200 and sim.broker.orders() == []


async def test_reused_lower_order_id_gets_103() -> None:
    async with gateway() as sim, client(sim) as ib:
        aapl = await qualified(ib)
        errors: list[tuple[int, int, str]] = []
        ib.errorEvent += lambda req_id, code, text, contract: errors.append((req_id, code, text))
        first = ib.placeOrder(aapl, MarketOrder("BUY", 1))
        await wait_until(first.isDone)
        lower = sim.broker.next_order_id(1) - 2  # below the next valid id, never an order id
        assert 0 < lower < first.order.orderId
        ib.client.placeOrder(lower, aapl, MarketOrder("BUY", 1))
        await wait_until(lambda: any(e[0] == lower for e in errors), what="error for reuse")
        assert (lower, 103, "Duplicate order id") in errors
        assert len(sim.broker.orders()) == 1


async def test_what_if_order_reports_margin_without_placing() -> None:
    async with gateway() as sim, client(sim) as ib:
        aapl = await qualified(ib)
        state = await ib.whatIfOrderAsync(aapl, MarketOrder("BUY", 100))
        price = sim.broker.price_of(aapl.conId)
        assert abs(float(state.initMarginChange) - 0.25 * 100 * price) < 0.01
        assert float(state.maintMarginChange) > 0 and float(state.equityWithLoanAfter) > 0
        assert state.commission == 1.0
        assert sim.broker.orders() == [] and sim.broker.executions() == []


async def test_bracket_order_parent_then_take_profit_cancels_stop() -> None:
    async with gateway() as sim, client(sim) as ib:
        aapl = await qualified(ib)
        q = sim.market.quote(aapl.conId)
        parent, take_profit, stop_loss = ib.bracketOrder(
            "BUY", 10, limitPrice=round(q.ask + 0.5, 2), takeProfitPrice=round(q.ask * 1.2, 2),
            stopLossPrice=round(q.bid * 0.8, 2))
        t_parent = ib.placeOrder(aapl, parent)
        t_tp = ib.placeOrder(aapl, take_profit)
        await wait_until(lambda: len(sim.broker.orders()) == 2, what="held orders")
        assert all(o.status == Status.PENDING_SUBMIT for o in sim.broker.orders())  # transmit=0
        assert sim.broker.executions() == []
        t_sl = ib.placeOrder(aapl, stop_loss)  # transmit=1 sends the whole bracket
        await wait_until(t_parent.isDone, what="parent filled")
        assert t_parent.orderStatus.status == "Filled"
        await wait_until(lambda: t_tp.orderStatus.status == t_sl.orderStatus.status
                         == "Submitted", what="children working after the parent filled")
        take_profit.lmtPrice = round(q.bid - 1.0, 2)  # make the take-profit marketable
        ib.placeOrder(aapl, take_profit)
        await wait_until(lambda: t_tp.isDone() and t_sl.isDone(), what="OCA resolution")
        assert (t_tp.orderStatus.status, t_sl.orderStatus.status) == ("Filled", "Cancelled")
        assert aapl.conId not in sim.broker.positions()  # flat again


async def test_oca_group_fill_cancels_the_others() -> None:
    async with gateway() as sim, client(sim) as ib:
        aapl = await qualified(ib)
        q = sim.market.quote(aapl.conId)
        resting = ib.placeOrder(aapl, LimitOrder("BUY", 1, round(q.bid * 0.7, 2),
                                                  ocaGroup="g1", ocaType=1))
        await wait_until(lambda: resting.orderStatus.status == "Submitted")
        filled = ib.placeOrder(aapl, Order(action="BUY", totalQuantity=1, orderType="MKT",
                                            ocaGroup="g1", ocaType=1))
        await wait_until(lambda: filled.isDone() and resting.isDone())
        assert (filled.orderStatus.status, resting.orderStatus.status) == ("Filled", "Cancelled")


async def test_global_cancel_cancels_every_client() -> None:
    async with gateway() as sim, client(sim, 1) as ib1, client(sim, 2) as ib2:
        aapl = await qualified(ib1)
        low = round(sim.market.quote(aapl.conId).bid * 0.5, 2)
        t1 = ib1.placeOrder(aapl, LimitOrder("BUY", 1, low))
        t2 = ib2.placeOrder(aapl, LimitOrder("BUY", 2, low))
        await wait_until(lambda: t1.orderStatus.status == t2.orderStatus.status == "Submitted")
        ib1.reqGlobalCancel()
        await wait_until(lambda: t1.isDone() and t2.isDone(), what="global cancel")
        assert t1.orderStatus.status == t2.orderStatus.status == "Cancelled"
        assert all(o.status == Status.CANCELLED for o in sim.broker.orders())


async def test_orders_and_executions_survive_reconnect_with_same_client_id() -> None:
    async with gateway() as sim:
        async with client(sim, 9) as ib:
            aapl = await qualified(ib)
            filled = ib.placeOrder(aapl, MarketOrder("BUY", 50))
            await wait_until(filled.isDone)
            resting = ib.placeOrder(aapl, LimitOrder("SELL", 5, 9999.0))
            await wait_until(lambda: resting.orderStatus.status == "Submitted")
            exec_id = filled.fills[0].execution.execId
            last_id = resting.order.orderId
        await wait_until(lambda: 9 not in sim.connected_client_ids(), what="disconnect seen")
        assert sim.broker.orders()[1].status == Status.SUBMITTED  # still working, like IB
        async with client(sim, 9) as ib:
            fills = ib.fills()
            assert [f.execution.execId for f in fills] == [exec_id]
            assert fills[0].commissionReport.commission == 1.0
            (open_trade,) = ib.openTrades()
            assert open_trade.order.orderId == last_id and open_trade.order.lmtPrice == 9999.0
            assert open_trade.orderStatus.status == "Submitted"
            assert ib.client.getReqId() > last_id  # nextValidId is above the old ids
            # the reconnected client can still cancel the order it placed before
            ib.cancelOrder(open_trade.order)
            await wait_until(lambda: open_trade.orderStatus.status == "Cancelled")
            done = await ib.reqCompletedOrdersAsync(apiOnly=True)
            assert sorted(t.orderStatus.status for t in done) == ["Cancelled", "Filled"]


async def test_external_order_is_seen_by_client_zero() -> None:
    async with gateway() as sim, client(sim, 0) as ib:
        order = sim.broker.place_external_order("AAPL", "BUY", 10)
        await wait_until(lambda: any(t.orderStatus.status == "Filled" for t in ib.trades()),
                         what="manual order reported to client 0")
        (trade,) = ib.trades()
        assert trade.order.permId == order.perm_id and trade.fills[0].execution.shares == 10


async def test_ioc_limit_that_cannot_fill_is_cancelled() -> None:
    async with gateway() as sim, client(sim) as ib:
        aapl = await qualified(ib)
        low = round(sim.market.quote(aapl.conId).bid * 0.5, 2)
        trade = ib.placeOrder(aapl, LimitOrder("BUY", 1, low, tif="IOC"))
        await wait_until(trade.isDone)
        assert trade.orderStatus.status == "Cancelled" and not trade.fills
        assert sim.market.active.get(aapl.conId, 0) == 0


async def test_bad_order_messages_get_errors_and_the_server_keeps_serving() -> None:
    async with gateway() as sim, client(sim) as ib:
        aapl = await qualified(ib)
        errors: list[tuple[int, int]] = []
        ib.errorEvent += lambda req_id, code, text, contract: errors.append((req_id, code))
        next_id = sim.broker.next_order_id(1) + 10
        ib.client.send(3, next_id, "AAPL")  # a placeOrder cut short
        ib.client.send(4, 1, "not-a-number", "")  # cancelOrder with a garbage id
        ib.client.send(4, 1, 424242, "")  # cancelOrder for an unknown order
        await wait_until(lambda: (424242, 10147) in errors, what="unknown-cancel error")
        assert (next_id, 320) in errors
        trade = ib.placeOrder(aapl, MarketOrder("BUY", 1))  # still serving
        await wait_until(trade.isDone)
        assert trade.orderStatus.status == "Filled"


async def test_trailing_stop_follows_the_price_then_sells() -> None:
    async with gateway() as sim, client(sim) as ib:
        spy = await qualified(ib, "SPY")
        lasts: list[float] = []
        sim.market.add_listener(lambda cid, q: lasts.append(q.last) if cid == spy.conId else None)
        trade = ib.placeOrder(spy, Order(action="SELL", totalQuantity=4, orderType="TRAIL",
                                         auxPrice=0.10))
        await wait_until(lambda: trade.orderStatus.status == "Submitted")
        start = sim.market.quote(spy.conId).last
        step_until(sim, spy.conId, lambda: sim.broker.orders()[0].status == Status.FILLED)
        await wait_until(trade.isDone)
        peak = max([start, *lasts[:-1]])
        assert lasts[-1] <= round(peak - 0.10, 2) + 1e-9  # triggered 0.10 below the high
        assert all(x > round(max([start, *lasts[:i]]) - 0.10, 2) + 1e-9
                   for i, x in enumerate(lasts[:-1]))  # and not before
        assert trade.fills[0].execution.side == "SLD"


async def test_partial_fills_with_per_order_minimum_commission() -> None:
    async with gateway() as sim, client(sim) as ib:
        sim.broker.partial_fills = True
        aapl = await qualified(ib)
        q = sim.market.quote(aapl.conId)
        qty = q.ask_size + 500  # more than the touch shows
        trade = ib.placeOrder(aapl, LimitOrder("BUY", qty, round(q.ask + 0.02, 2)))
        await wait_until(lambda: trade.orderStatus.filled == q.ask_size, what="first part")
        assert trade.orderStatus.status == "Submitted" and trade.orderStatus.remaining == 500
        step_until(sim, aapl.conId, lambda: sim.broker.orders()[0].status == Status.FILLED)
        await wait_until(lambda: trade.isDone() and all(
            f.commissionReport.execId for f in trade.fills))
        assert len(trade.fills) >= 2 and sum(f.execution.shares for f in trade.fills) == qty
        total = sum(f.commissionReport.commission for f in trade.fills)
        assert abs(total - max(0.005 * qty, 1.0)) < 1e-6  # one order, one minimum
        assert trade.orderStatus.filled == qty and trade.log[-1].status == "Filled"


async def test_cutting_a_partly_filled_order_to_its_fill_completes_it() -> None:
    async with gateway() as sim, client(sim) as ib:
        sim.broker.partial_fills = True
        aapl = await qualified(ib)
        q = sim.market.quote(aapl.conId)
        order = LimitOrder("BUY", q.ask_size + 300, round(q.ask, 2))
        trade = ib.placeOrder(aapl, order)
        await wait_until(lambda: trade.orderStatus.filled == q.ask_size, what="partial fill")
        order.totalQuantity = q.ask_size
        ib.placeOrder(aapl, order)
        await wait_until(trade.isDone, what="filled after the cut")
        assert trade.orderStatus.status == "Filled" and trade.orderStatus.remaining == 0
        assert sim.market.active.get(aapl.conId, 0) == 0
