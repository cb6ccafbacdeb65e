"""Order types beyond MKT/LMT/STP in the simulated Gateway: their trigger semantics (pure
rules) and the same orders placed by unmodified ib_insync / ib_async over the TWS wire.

TRAIL LIMIT, MIT, LIT, REL, MIDPRICE, MOC/LOC (closing auction), TIFs GTD and FOK.
"""

from __future__ import annotations

import datetime as dt

import pytest

from ibhub.sim.orders import (
    SimOrder,
    Status,
    close_fill_price,
    fill_price,
    parse_place_order,
)
from tests.ibclient import Order, Stock
from tests.sim.broker_support import (
    client,
    gateway,
    place_order_fields,
    qualified,
    step_until,
    wait_until,
)


def _order(otype: str, action: str = "BUY", lmt: float | None = None,
           aux: float | None = None, **kw: object) -> SimOrder:
    return SimOrder(order_id=1, client_id=1, perm_id=1, con_id=1, symbol="X", action=action,
                    total_qty=1, order_type=otype, lmt_price=lmt, aux_price=aux, tif="DAY",
                    status=Status.SUBMITTED, **kw)  # type: ignore[arg-type]


def test_trigger_and_peg_rules() -> None:
    # MIT: a buy triggers when the last falls to the trigger, then takes the ask
    mit = _order("MIT", aux=99.0)
    assert fill_price(mit, 99.9, 100.1, 100.0, False) is None
    assert fill_price(mit, 98.9, 99.1, 99.0, False) == 99.1
    # a sell MIT triggers on the way up
    assert fill_price(_order("MIT", "SELL", aux=101.0), 100.9, 101.1, 101.0, False) == 100.9
    assert fill_price(_order("MIT", "SELL", aux=101.0), 99.9, 100.1, 100.0, False) is None
    # LIT: triggered, it is a limit order (here not marketable: it rests)
    lit = _order("LIT", lmt=98.5, aux=99.0)
    assert fill_price(lit, 98.9, 99.1, 99.0, False) is None and lit.stop_triggered
    assert fill_price(lit, 98.3, 98.5, 98.4, False) == 98.5
    # TRAIL LIMIT (sell, amount 1, offset 0.2): stop follows the high, limit = stop - 0.2
    tl = _order("TRAIL LIMIT", "SELL", aux=1.0)
    tl.request = parse_place_order(place_order_fields(
        Stock("AAPL", "SMART", "USD"), Order(action="SELL", totalQuantity=1,
                                             orderType="TRAIL LIMIT", auxPrice=1.0,
                                             lmtPriceOffset=0.2), 1))
    for last in (100.0, 102.0, 101.5):
        assert fill_price(tl, last - 0.1, last + 0.1, last, False) is None
    assert tl.trail_stop == 101.0
    assert fill_price(tl, 100.9, 101.1, 101.0, False) == 100.9  # triggered, bid >= 100.8
    assert tl.trail_limit == pytest.approx(100.8)
    # REL buy, offset 0.05, cap 100.02: pegs at min(bid + 0.05, cap), fills when last trades there
    rel = _order("REL", lmt=100.02, aux=0.05)
    assert fill_price(rel, 99.95, 100.05, 100.03, False) is None
    assert fill_price(rel, 99.95, 100.05, 100.0, False) == 100.0
    assert fill_price(rel, 99.90, 100.10, 99.95, False) == 99.95
    # MIDPRICE: the midpoint, unless beyond the cap
    assert fill_price(_order("MIDPRICE"), 99.0, 101.0, 100.5, True) == 100.0
    assert fill_price(_order("MIDPRICE", lmt=99.5), 99.0, 101.0, 100.5, True) is None
    # MOC / LOC: never against a quote; the close decides
    assert fill_price(_order("MOC"), 99.0, 101.0, 100.0, True) is None
    assert close_fill_price(_order("MOC", "SELL"), 100.0) == 100.0
    assert close_fill_price(_order("LOC", lmt=99.0), 100.0) is None
    assert close_fill_price(_order("LOC", "SELL", lmt=99.0), 100.0) == 100.0


async def test_order_types_over_the_wire() -> None:
    async with gateway() as sim, client(sim) as ib:
        aapl = await qualified(ib)
        con = aapl.conId
        last = sim.market.quote(con).last
        errors: list[tuple[int, int]] = []
        ib.errorEvent += lambda rid, code, *_: errors.append((rid, code))
        # GTD (whole seconds): expires 1-2 s from now, while the rest of the test runs
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        gone = (now + dt.timedelta(seconds=2)).strftime("%Y%m%d-%H:%M:%S")
        gtd = ib.placeOrder(aapl, Order(action="BUY", totalQuantity=1, orderType="LMT",
                                        lmtPrice=round(last * 0.5, 2), tif="GTD",
                                        goodTillDate=gone))
        # MIT sell above the market: rests, fills once the walk touches it
        mit = ib.placeOrder(aapl, Order(action="SELL", totalQuantity=3, orderType="MIT",
                                        auxPrice=round(last + 0.05, 2)))
        # TRAIL LIMIT buy by percent: rests until the price rises 0.1 % off its low
        tl = ib.placeOrder(aapl, Order(action="BUY", totalQuantity=2, orderType="TRAIL LIMIT",
                                       trailingPercent=0.1, lmtPriceOffset=0.5))
        moc = ib.placeOrder(aapl, Order(action="BUY", totalQuantity=4, orderType="MOC"))
        loc = ib.placeOrder(aapl, Order(action="BUY", totalQuantity=4, orderType="LOC",
                                        lmtPrice=round(last * 0.5, 2)))
        mid = ib.placeOrder(aapl, Order(action="BUY", totalQuantity=1, orderType="MIDPRICE"))
        await wait_until(lambda: mid.isDone() and moc.orderStatus.status == "Submitted"
                         and loc.orderStatus.status == "Submitted", what="orders working")
        q = sim.market.quote(con)
        assert mid.orderStatus.status == "Filled"
        assert mid.orderStatus.avgFillPrice == pytest.approx((q.bid + q.ask) / 2, abs=1e-6)

        step_until(sim, con, lambda: mit.orderStatus.status == "Filled" or
                   sim.market.quote(con).last >= mit.order.auxPrice)
        await wait_until(lambda: mit.orderStatus.status == "Filled", what="MIT fill")
        assert mit.orderStatus.avgFillPrice >= mit.order.auxPrice - 0.05
        step_until(sim, con, lambda: any(o.order_type == "TRAIL LIMIT" and o.is_done
                                         for o in sim.broker.orders()))
        await wait_until(lambda: tl.orderStatus.status == "Filled", what="TRAIL LIMIT fill")

        # the close: MOC fills at the last price, the LOC's limit is not reached
        close = sim.market.quote(con).last
        assert sim.broker.closing_auction(con) == 1
        await wait_until(lambda: moc.isDone() and loc.isDone(), what="closing auction")
        assert moc.orderStatus.status == "Filled"
        assert moc.orderStatus.avgFillPrice == pytest.approx(close)
        assert loc.orderStatus.status == "Cancelled"

        # GTD: gone at its time (checked on market steps), with IB's 202
        def expired() -> bool:
            sim.market.step(con)
            return gtd.isDone()
        await wait_until(expired, timeout=5, what="GTD expiry")
        assert gtd.orderStatus.status == "Cancelled"
        await wait_until(lambda: (gtd.order.orderId, 202) in errors, what="error 202")


@pytest.mark.parametrize(("order", "reason"), [
    (dict(orderType="LIT", auxPrice=100.0), "needs a limit price"),
    (dict(orderType="TRAIL", auxPrice=1.0, trailingPercent=1.0), "not both"),
    (dict(orderType="TRAIL LIMIT", auxPrice=1.0), "lmtPriceOffset"),
    (dict(orderType="LMT", lmtPrice=1.0, tif="GTD", goodTillDate="20200101 10:00:00 UTC"),
     "in the past"),
    (dict(orderType="LMT", lmtPrice=1.0, tif="GTD", goodTillDate="tomorrow"), "goodTillDate"),
    (dict(orderType="MOC", tif="GTC"), "must be DAY"),
    (dict(orderType="LMT", lmtPrice=1.0, tif="OPG"), "Time in force"),
])
async def test_refused_with_ibs_201(order: dict[str, object], reason: str) -> None:
    async with gateway() as sim, client(sim) as ib:
        aapl = await qualified(ib)
        trade = ib.placeOrder(aapl, Order(action="BUY", totalQuantity=1, **order))
        await wait_until(trade.isDone, what="refusal")
        [entry] = [e for e in trade.log if e.errorCode]
        assert entry.errorCode == 201 and reason in entry.message, entry.message
