"""Order types beyond MKT/LMT/STP through the SDK, over ZeroMQ, to the simulated Gateway.

TRAIL (percent), TRAIL LIMIT (amount + offset), MIT, LIT, REL, MIDPRICE, MOC (closing
auction), GTD: each reaches the Gateway with IB's fields (auxPrice, trailingPercent,
lmtPriceOffset, goodTillDate), comes back in the hub's order lists, and fields that do
not fit the type are refused with a typed reason, never dropped.
"""

from __future__ import annotations

import datetime as dt

import pytest

from ibhub.client import OrderRejectedError
from ibhub.hub.server import HubServer
from ibhub.protocol import RejectReason
from ibhub.sim import SimGateway
from tests.e2e.test_sdk_orders import order_hub, sdk
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(60)

__all__ = ["order_hub"]

AAPL = 265598


async def test_order_types_reach_the_gateway_and_fill(
    order_hub: HubServer, hub_sim: SimGateway
) -> None:
    async with sdk(order_hub, "types") as hub:
        px = hub_sim.broker.price_of(AAPL)
        later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).strftime("%Y%m%d %H:%M:%S")
        placed = {
            "trail": await hub.place_order("AAPL", "SELL", 2, order_type="TRAIL",
                                           trailing_percent=5.0),
            "trail_limit": await hub.place_order(
                "AAPL", "BUY", 2, order_type="TRAIL LIMIT", trailing_amount=3.0,
                limit_price_offset=0.1, tif="GTD", good_till_date=f"{later} UTC"),
            "mit": await hub.place_order("AAPL", "BUY", 1, order_type="MIT",
                                         stop_price=round(px * 0.95, 2)),
            "lit": await hub.place_order("AAPL", "SELL", 1, order_type="LIT",
                                         stop_price=round(px * 1.05, 2),
                                         limit_price=round(px * 1.04, 2)),
            "rel": await hub.place_order("AAPL", "BUY", 1, order_type="REL", peg_offset=0.0,
                                         limit_price=round(px * 0.95, 2)),
            "moc": await hub.place_order("AAPL", "BUY", 3, order_type="MOC"),
        }
        mid = await hub.place_order("AAPL", "BUY", 1, order_type="MIDPRICE")
        for order in placed.values():
            await order.wait_until(lambda o: o.status == "Submitted", 5.0)
        await mid.wait_done(5.0)
        assert mid.status == "Filled"

        sim = {o.order_id: o for o in hub_sim.broker.orders()}
        up = {k: sim[o.order_id] for k, o in placed.items()}
        assert (up["trail"].order_type, up["trail"].aux_price,
                up["trail"].trailing_percent) == ("TRAIL", None, 5.0)
        tl = up["trail_limit"]
        assert (tl.order_type, tl.aux_price, tl.tif) == ("TRAIL LIMIT", 3.0, "GTD")
        assert tl.request is not None and tl.request.lmt_price_offset == 0.1
        assert tl.request.good_till_date == f"{later} UTC"
        assert (up["mit"].order_type, up["mit"].aux_price) == ("MIT", round(px * 0.95, 2))
        assert (up["lit"].aux_price, up["lit"].lmt_price) == (round(px * 1.05, 2),
                                                               round(px * 1.04, 2))
        assert (up["rel"].aux_price, up["rel"].lmt_price) == (0.0, round(px * 0.95, 2))

        # the hub's lists show the fields as placed
        infos = {i.order_id: i for i in await hub.open_orders()}
        tli = infos[placed["trail_limit"].order_id]
        assert (tli.trailing_amount, tli.limit_price_offset, tli.good_till_date) == (
            3.0, 0.1, f"{later} UTC")
        assert infos[placed["trail"].order_id].trailing_percent == 5.0
        assert placed["trail"].order_params == {"trailing_percent": 5.0}  # the SDK's Order
        assert infos[placed["rel"].order_id].peg_offset == 0.0
        assert infos[placed["mit"].order_id].stop_price == round(px * 0.95, 2)

        # the close fills the MOC; the hub reports it like any fill
        await wait_until(lambda: hub_sim.broker.closing_auction(AAPL) == 1, 5.0, "the close")
        await placed["moc"].wait_done(5.0)
        assert placed["moc"].status == "Filled" and placed["moc"].filled == 3


@pytest.mark.parametrize(("kwargs", "reason", "text"), [
    (dict(order_type="TRAIL"), RejectReason.BAD_ORDER_ATTRIBUTE, "exactly one of"),
    (dict(order_type="TRAIL", trailing_amount=1.0, trailing_percent=1.0),
     RejectReason.BAD_ORDER_ATTRIBUTE, "exactly one of"),
    (dict(order_type="LMT", limit_price=1.0, trailing_percent=1.0),
     RejectReason.BAD_ORDER_ATTRIBUTE, "not used by a LMT order"),
    (dict(order_type="TRAIL LIMIT", trailing_amount=1.0), RejectReason.MISSING_LIMIT_PRICE,
     "limit_price_offset"),
    (dict(order_type="LIT", stop_price=1.0), RejectReason.MISSING_LIMIT_PRICE, "limit_price"),
    (dict(order_type="MIT"), RejectReason.MISSING_STOP_PRICE, "trigger"),
    (dict(order_type="MOC", tif="GTC"), RejectReason.BAD_TIF, "must be DAY"),
    (dict(tif="GTD", good_till_date="20200101 10:00:00 UTC"), RejectReason.BAD_TIF, "past"),
    (dict(tif="GTD"), RejectReason.BAD_TIF, "needs a good_till_date"),
    (dict(good_till_date="20991231 10:00:00 UTC"), RejectReason.BAD_TIF, "only used"),
    (dict(tif="OPG"), RejectReason.BAD_TIF, "tif must be one of"),
])
async def test_fields_that_do_not_fit_are_refused(
    order_hub: HubServer, kwargs: dict[str, object], reason: str, text: str
) -> None:
    async with sdk(order_hub, "refused") as hub:
        with pytest.raises(OrderRejectedError) as info:
            await hub.place_order("AAPL", "BUY", 1, **kwargs)  # type: ignore[arg-type]
        assert info.value.reason == reason and text in info.value.message, info.value.message


async def test_what_if_gives_margins_and_places_nothing(
    order_hub: HubServer, hub_sim: SimGateway
) -> None:
    async with sdk(order_hub, "whatif") as hub:
        px = hub_sim.broker.price_of(AAPL)
        est = await hub.what_if_order("AAPL", "BUY", 100, order_type="LMT",
                                      limit_price=round(px * 0.99, 2))
        assert est.init_margin_change is not None and est.init_margin_change > 0
        assert est.init_margin_after == pytest.approx(
            (est.init_margin_before or 0) + est.init_margin_change)
        assert est.commission is not None and est.commission > 0
        assert est.commission_currency == "USD"
        trail = await hub.what_if_order("AAPL", "SELL", 10, order_type="TRAIL",
                                        trailing_percent=2.0)
        assert trail.maint_margin_change is not None
        # nothing was placed: no order at the Gateway, in the hub, or in the journal
        assert hub_sim.broker.orders() == []
        assert await hub.open_orders() == [] and await hub.completed_orders() == []
        assert order_hub.orders.book.store.by_id == {}
        # the checks of a real order apply
        with pytest.raises(OrderRejectedError) as info:
            await hub.what_if_order("AAPL", "BUY", 1, order_type="TRAIL")
        assert info.value.reason == RejectReason.BAD_ORDER_ATTRIBUTE
        # IB's own refusal comes back with its code
        with pytest.raises(OrderRejectedError) as info:
            await hub.what_if_order("AAPL", "BUY", 1, account="DU999")
        assert info.value.reason == RejectReason.IB_REJECTED and info.value.ib_code == 201
