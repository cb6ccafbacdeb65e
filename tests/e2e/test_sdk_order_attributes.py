"""OCA groups, order refs and algo fields through the SDK, against the simulated Gateway.

Every PlaceOrder field is honoured: the group reaches the Gateway (per script), the
script's label comes back on the Order, in the hub's order lists and in executions,
the algo reaches the Gateway unchanged; a malformed attribute is refused, typed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ibhub.client import HubError, OrderRejectedError
from ibhub.hub.server import HubServer
from ibhub.orders.journal import Journal
from ibhub.orders.port import decode_algo_params
from ibhub.protocol import ErrorCode, RejectReason
from ibhub.sim import SimGateway
from tests.e2e.test_sdk_orders import order_hub, resting_buy_price, sdk
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(60)

__all__ = ["order_hub"]  # the fixture, shared


async def test_oca_group_fill_cancels_the_scripts_other_order_only(
    order_hub: HubServer, hub_sim: SimGateway
) -> None:
    async with sdk(order_hub, "ocauser") as hub, sdk(order_hub, "bystander") as other:
        price = resting_buy_price(hub_sim)
        resting = await hub.place_order("AAPL", "BUY", 4, order_type="LMT", limit_price=price,
                                        oca_group="entry", oca_type=1, order_ref="leg-a")
        theirs = await other.place_order("AAPL", "BUY", 4, order_type="LMT", limit_price=price,
                                         oca_group="entry", oca_type=1)
        await resting.wait_until(lambda o: o.status == "Submitted", 5.0)
        await theirs.wait_until(lambda o: o.status == "Submitted", 5.0)
        filled = await hub.place_order("AAPL", "BUY", 4, oca_group="entry", oca_type=1,
                                       order_ref="leg-b")
        await filled.wait_done(5.0)
        await resting.wait_done(5.0)
        assert (filled.status, resting.status) == ("Filled", "Cancelled")
        assert resting.filled == 0 and filled.filled == 4
        # another script's group of the same name is its own: still working
        assert theirs.status == "Submitted"
        sim = {o.order_id: o for o in hub_sim.broker.orders()}
        assert sim[theirs.order_id].status == "Submitted"
        assert sim[filled.order_id].oca_group != sim[theirs.order_id].oca_group
        assert hub_sim.broker.positions()[265598][0] == 4
        # the hub's lists show the script's own names
        done = {o.order_id: o for o in await hub.completed_orders()}
        assert (done[resting.order_id].oca_group, done[resting.order_id].oca_type) == ("entry", 1)
        assert done[filled.order_id].order_ref == "leg-b"
        assert resting.oca_group == "entry" and resting.order_ref == "leg-a"


async def test_order_ref_and_algo_round_trip(order_hub: HubServer, hub_sim: SimGateway) -> None:
    async with sdk(order_hub, "labeller") as hub:
        params = {"adaptivePriority": "Urgent"}
        working = await hub.place_order("AAPL", "BUY", 2, order_type="LMT",
                                        limit_price=resting_buy_price(hub_sim),
                                        order_ref="my label", algo_strategy="Adaptive",
                                        algo_params=params, algo_id="a-1")
        bought = await hub.place_order("AAPL", "BUY", 1, order_ref="buy now")
        await bought.wait_until(lambda o: o.done and o.commission > 0, 5.0)
        await working.wait_until(lambda o: o.status == "Submitted", 5.0)
        [info] = await hub.open_orders()
        assert (info.order_ref, info.algo_strategy, info.algo_params, info.algo_id) == (
            "my label", "Adaptive", params, "a-1")
        assert working.algo_params == params and working.order_ref == "my label"
        [ex] = await hub.executions()
        assert ex.order_ref == "buy now"
        up = next(o for o in hub_sim.broker.orders() if o.order_id == working.order_id)
        assert up.algo_strategy == "Adaptive"
        assert up.algo_params == (("adaptivePriority", "Urgent"),)
        assert up.request is not None and up.request.algo_id == "a-1"
        assert up.order_ref.startswith("ibhub1:")  # the hub's own ref stays upstream
        # the journal holds them too (what a restart restores)
        path = order_hub.orders.journal_path
        await wait_until(lambda: _journaled(path, working.client_order_id), 5.0, "journaled")
        reader = Journal(path, readonly=True)
        try:
            rec = reader.find("labeller", working.client_order_id)
        finally:
            reader.close()
        assert rec is not None and rec.order_ref == "my label" and rec.algo_id == "a-1"
        assert (rec.algo_strategy, decode_algo_params(rec.algo_params)) == ("Adaptive", params)


async def test_malformed_attributes_are_refused_typed(
    order_hub: HubServer, hub_sim: SimGateway
) -> None:
    async with sdk(order_hub, "sloppy") as hub:
        kwargs: dict[str, Any]
        for kwargs, word in (
            ({"oca_group": "g", "oca_type": 7}, "oca_type"),
            ({"oca_type": 1}, "oca_group"),
            ({"algo_params": {"a": "b"}}, "algo_strategy"),
        ):
            with pytest.raises(OrderRejectedError) as info:
                await hub.place_order("AAPL", "BUY", 1, **kwargs)
            assert info.value.reason == RejectReason.BAD_ORDER_ATTRIBUTE, kwargs
            assert word in info.value.message, (kwargs, info.value.message)
        # control characters never reach the order manager: decoding refuses them
        for kwargs, word in (
            ({"order_ref": "x\0y"}, "order_ref"),
            ({"oca_group": "a\tb"}, "oca_group"),
            ({"algo_strategy": "Adaptive", "algo_params": {"p": "\n"}}, "algo_params"),
            ({"algo_strategy": "Adaptive", "algo_params": {f"k{i}": "v" for i in range(33)}},
             "algo_params"),
        ):
            with pytest.raises(HubError) as bad:
                await hub.place_order("AAPL", "BUY", 1, **kwargs)
            assert bad.value.code == ErrorCode.BAD_REQUEST, kwargs
            assert word in str(bad.value), (kwargs, str(bad.value))
    assert hub_sim.broker.orders() == []


def _journaled(path: Path, coid: str) -> bool:
    reader = Journal(path, readonly=True)
    try:
        return reader.find("labeller", coid) is not None
    finally:
        reader.close()


async def test_oca_type_2_reduction_at_the_gateway_reaches_the_script(
    order_hub: HubServer, hub_sim: SimGateway
) -> None:
    async with sdk(order_hub, "reducer") as hub:
        larger = await hub.place_order("AAPL", "BUY", 6, order_type="LMT",
                                       limit_price=resting_buy_price(hub_sim),
                                       oca_group="r", oca_type=2)
        await larger.wait_until(lambda o: o.status == "Submitted", 5.0)
        filled = await hub.place_order("AAPL", "BUY", 4, oca_group="r", oca_type=2)
        await filled.wait_done(5.0)
        assert filled.status == "Filled"
        up = next(o for o in hub_sim.broker.orders() if o.order_id == larger.order_id)
        assert up.total_qty == 2 and up.status == "Submitted"  # the Gateway cut it

        store = order_hub.orders.book.store
        await wait_until(lambda: store.get(larger.order_id).quantity == 2, 5.0, "the hub's cut")
        [info] = await hub.open_orders()
        assert (info.order_id, info.quantity, info.remaining) == (larger.order_id, 2.0, 2.0)
