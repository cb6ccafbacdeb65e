"""Orders through the SDK end to end: SimGateway over TCP, a HubServer with its order
service on ipc, and ``AsyncHub`` / ``Hub`` clients over real ZeroMQ sockets.

The simulator's book (``sim.broker``) and request counters are the ground truth for
what reached the Gateway; the ``Order`` objects must agree with them.
"""

from __future__ import annotations

import asyncio
import math
import sys
from pathlib import Path

import pytest

from ibhub.client import AsyncHub, Hub, Order, OrderRejectedError
from ibhub.hub.server import HubServer
from ibhub.protocol import RejectReason
from ibhub.sim import SimGateway
from tests.e2e.conftest import HubFactory
from tests.e2e.test_orders_hub import PLACE_ORDER, wire_orders
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(60)

AAPL = 265598
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def order_hub(make_hub: HubFactory) -> HubServer:
    hub = await make_hub()
    svc = await wire_orders(hub)
    await wait_until(svc.reconciled.is_set, 5.0, "orders reconciled")
    return hub


def sdk(hub: HubServer, name: str) -> AsyncHub:
    return AsyncHub(pub=hub.pub_endpoint, rpc=hub.rpc_endpoint, name=name, request_timeout=5.0)


def resting_buy_price(sim: SimGateway) -> float:
    """A buy limit 5% under the market: rests, and is inside the hub's 10% band."""
    return round(sim.broker.price_of(AAPL) * 0.95, 2)


async def test_market_order_fills_with_commission_then_positions_and_summary(
    order_hub: HubServer, hub_sim: SimGateway
) -> None:
    async with sdk(order_hub, "buyer") as hub:
        order = await hub.place_order("AAPL", "BUY", 10)
        assert isinstance(order, Order) and order.order_id > 0
        await order.wait_until(lambda o: o.status == "Filled" and o.commission > 0, 5.0)
        assert order.done and not order.rejected and not order.cancelled
        assert order.filled == 10 and order.remaining == 0
        sim_order = next(o for o in hub_sim.broker.orders() if o.order_id == order.order_id)
        assert sim_order.status == "Filled"
        assert order.avg_fill_price == pytest.approx(sim_order.avg_fill_price)
        sim_fills = [x for x in hub_sim.broker.executions() if x.order_id == order.order_id]
        assert [f.exec_id for f in order.fills] == [x.exec_id for x in sim_fills]
        assert sum(f.shares for f in order.fills) == 10
        assert order.commission == pytest.approx(sum(x.commission for x in sim_fills))
        assert all(f.commission is not None for f in order.fills)
        kinds = [e.kind for e in order.events]
        assert kinds[0] == "acknowledged" and "filled" in kinds and kinds[-1] == "commission"
        assert [e.seq for e in order.events] == list(range(1, len(kinds) + 1))
        assert hub.stats["gaps"] == 0

        executions = await hub.executions()
        assert [x.exec_id for x in executions] == [f.exec_id for f in order.fills]
        completed = await hub.completed_orders()
        assert [(o.order_id, o.status) for o in completed] == [(order.order_id, "Filled")]
        assert await hub.open_orders() == []

        async def holds_aapl() -> bool:
            return any(p.con_id == AAPL and p.position == 10 for p in await hub.positions())

        for _ in range(200):  # account updates travel separately from order events
            if await holds_aapl():
                break
            await asyncio.sleep(0.02)
        assert await holds_aapl()
        summary = await hub.account_summary(["NetLiquidation"])
        assert set(summary) == {"NetLiquidation"}
        assert math.isfinite(float(summary["NetLiquidation"].value))
        assert (await hub.account_summary())  # every tag the hub has


async def test_limit_order_rests_is_modified_then_cancelled(
    order_hub: HubServer, hub_sim: SimGateway
) -> None:
    async with sdk(order_hub, "patient") as hub:
        price = resting_buy_price(hub_sim)
        order = await hub.place_order("AAPL", "BUY", 5, order_type="LMT", limit_price=price)
        await order.wait_until(lambda o: o.status == "Submitted", 5.0)
        assert not order.done and order.remaining == 5 and order.limit_price == price
        assert [o.client_order_id for o in await hub.open_orders()] == [order.client_order_id]

        lower = round(price * 0.99, 2)
        same = await hub.modify_order(order, quantity=7, limit_price=lower)
        assert same is order and order.quantity == 7 and order.limit_price == lower
        await order.wait_until(lambda o: any(e.kind == "modified" for e in o.events), 5.0)
        sim_order = next(o for o in hub_sim.broker.orders() if o.order_id == order.order_id)
        await wait_until(lambda: sim_order.total_qty == 7 and sim_order.lmt_price == lower,
                         5.0, "the modification at the simulator")  # fmt: skip

        retried = await hub.place_order("AAPL", "BUY", 5, order_type="LMT", limit_price=price,
                                        client_order_id=order.client_order_id)  # fmt: skip
        assert retried is order and order.limit_price == lower  # not undone by the retry

        assert await hub.cancel_order(order) is order
        await order.wait_done(5.0)
        assert order.status == "Cancelled" and order.cancelled and not order.rejected
        assert order.filled == 0
        assert [o.status for o in hub_sim.broker.orders()] == ["Cancelled"]
        with pytest.raises(OrderRejectedError) as info:  # a finished order cannot change
            await hub.cancel_order(order)
        assert info.value.reason == RejectReason.ORDER_DONE


async def test_two_clients_each_see_only_their_own_orders(
    order_hub: HubServer, hub_sim: SimGateway
) -> None:
    async with sdk(order_hub, "alice") as alice, sdk(order_hub, "bob") as bob:
        a = await alice.place_order("AAPL", "BUY", 3)
        b = await bob.place_order("AAPL", "SELL", 4)
        await a.wait_until(lambda o: o.done and o.commission > 0, 5.0)
        await b.wait_until(lambda o: o.done and o.commission > 0, 5.0)
        assert alice.orders() == [a] and bob.orders() == [b]
        assert {e.order_id for e in a.events} == {a.order_id}
        assert {e.owner for e in a.events} == {"alice"}
        assert {e.order_id for e in b.events} == {b.order_id}
        assert {e.owner for e in b.events} == {"bob"}
        assert [o.order_id for o in await alice.completed_orders()] == [a.order_id]
        with pytest.raises(OrderRejectedError) as info:
            await bob.cancel_order(a.order_id)  # not bob's
        assert info.value.reason in (RejectReason.NOT_OWNER, RejectReason.ORDER_DONE)


async def test_an_absurd_order_is_refused_before_the_gateway(
    order_hub: HubServer, hub_sim: SimGateway
) -> None:
    before = hub_sim.request_counts[PLACE_ORDER]
    async with sdk(order_hub, "careless") as hub:
        with pytest.raises(OrderRejectedError) as info:
            await hub.place_order("AAPL", "BUY", 1e9, client_order_id="huge")
        err = info.value
        assert err.reason == RejectReason.QUANTITY_LIMIT and err.code == err.reason
        assert err.client_order_id == "huge" and "quantity" in err.message.lower()
        with pytest.raises(OrderRejectedError) as info:
            await hub.place_order("AAPL", "BUY", 1, order_type="LMT")
        assert info.value.reason == RejectReason.MISSING_LIMIT_PRICE
        assert hub.orders() == []
    assert hub_sim.request_counts[PLACE_ORDER] == before == 0
    assert hub_sim.broker.orders() == []


async def test_retrying_a_client_order_id_is_one_order(
    order_hub: HubServer, hub_sim: SimGateway
) -> None:
    async with sdk(order_hub, "retrier") as hub:
        first = await hub.place_order("AAPL", "BUY", 2, client_order_id="once")
        again = await hub.place_order("AAPL", "BUY", 2, client_order_id="once")
        assert again is first
        await first.wait_done(5.0)
        assert first.status == "Filled"
        with pytest.raises(OrderRejectedError) as info:  # same id, different order: a bug
            await hub.place_order("AAPL", "BUY", 3, client_order_id="once")
        assert info.value.reason == RejectReason.CLIENT_ORDER_ID_REUSED
    async with sdk(order_hub, "retrier") as later:  # the script again, new lease
        third = await later.place_order("AAPL", "BUY", 2, client_order_id="once")
        assert third.order_id == first.order_id and third.status == "Filled"
    assert [o.order_id for o in hub_sim.broker.orders()] == [first.order_id]
    assert hub_sim.request_counts[PLACE_ORDER] == 1


async def test_blocking_hub_places_and_waits_from_a_plain_thread(
    order_hub: HubServer, hub_sim: SimGateway
) -> None:
    def script() -> tuple[Order, Order, list[int]]:
        with Hub(order_hub.pub_endpoint, order_hub.rpc_endpoint, name="plain") as hub:
            filled = hub.place_order("AAPL", "BUY", 1)
            hub.wait_done(filled, 5.0)
            resting = hub.place_order("AAPL", "BUY", 1, order_type="LMT",
                                      limit_price=resting_buy_price(hub_sim))  # fmt: skip
            resting.wait_until_blocking(lambda o: o.status == "Submitted", 5.0)
            cancelled = hub.cancel_all_orders()
            resting.wait_done_blocking(5.0)
            return filled, resting, cancelled

    filled, resting, cancelled = await asyncio.to_thread(script)
    assert filled.status == "Filled" and filled.filled == 1
    assert resting.status == "Cancelled" and cancelled == [resting.order_id]
    assert len(hub_sim.broker.orders()) == 2


async def test_bracket_children_are_tracked(order_hub: HubServer, hub_sim: SimGateway) -> None:
    async with sdk(order_hub, "bracket") as hub:
        price = resting_buy_price(hub_sim)
        parent = await hub.place_order(
            "AAPL", "BUY", 1, order_type="LMT", limit_price=price,
            take_profit=round(price * 1.04, 2), stop_loss=round(price * 0.96, 2),
        )
        assert [c.client_order_id for c in parent.children] == [
            f"{parent.client_order_id}.tp", f"{parent.client_order_id}.sl"]
        assert [(c.action, c.order_type) for c in parent.children] == [
            ("SELL", "LMT"), ("SELL", "STP")]
        assert parent.children[0].limit_price == round(price * 1.04, 2)
        assert parent.children[1].stop_price == round(price * 0.96, 2)
        for leg in (parent, *parent.children):
            await leg.wait_until(lambda o: o.status in ("Submitted", "PreSubmitted"), 5.0)
        assert sorted(await hub.cancel_all_orders()) == sorted(
            o.order_id for o in (parent, *parent.children))
        for leg in (parent, *parent.children):
            await leg.wait_done(5.0)
            assert leg.cancelled


async def test_the_example_script_runs_its_demo() -> None:
    """clients/example_orders.py --demo: its own simulator and hub, blocking then asyncio."""
    for extra in ([], ["--asyncio"]):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(REPO / "clients" / "example_orders.py"), "--demo", *extra,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        text = out.decode()
        assert proc.returncode == 0, (text, err.decode())
        assert "MKT -> Filled; 10 @" in text and "LMT -> Cancelled" in text, text
        assert "position" in text or "positions" in text, text


async def test_an_order_filled_while_the_hub_was_down_ends_filled_after_restart(
    make_hub: HubFactory, hub_sim: SimGateway, ipc_dir: str
) -> None:
    """The hub dies with a resting order; the market fills it meanwhile. The restarted hub
    (same journal) reconciles; the SDK says hello again, listens on its new lease's order
    topic and its ``Order`` ends Filled with the fill, without the script doing anything."""
    endpoints = {"pub": f"ipc://{ipc_dir}/pub-o", "rpc": f"ipc://{ipc_dir}/rpc-o"}
    first = await make_hub(**endpoints)
    await wait_until((await wire_orders(first)).reconciled.is_set, 5.0, "reconciled")
    client = AsyncHub(endpoints["pub"], endpoints["rpc"], name="sleeper", request_timeout=2.0)
    await client.connect()
    try:
        ask = hub_sim.market.quote(AAPL).ask
        order = await client.place_order("AAPL", "BUY", 5, order_type="LMT",
                                         limit_price=round(ask - 0.02, 2))  # fmt: skip
        await order.wait_until(lambda o: o.status == "Submitted", 5.0)
        lease = client.lease
        await first.stop()
        for _ in range(20_000):  # the market walks on without the hub until the order fills
            if hub_sim.broker.orders()[0].status == "Filled":
                break
            hub_sim.market.step(AAPL)
        assert hub_sim.broker.orders()[0].status == "Filled" and not order.done

        second = await make_hub(**endpoints)
        await wait_until((await wire_orders(second)).reconciled.is_set, 5.0, "reconciled")
        await order.wait_until(lambda o: o.done and o.commissions_reported, 10.0)
        assert client.lease != lease and client.rehellos >= 1
        assert order.status == "Filled" and order.filled == 5 and order.remaining == 0
        sim_fills = [x.exec_id for x in hub_sim.broker.executions()]
        assert [f.exec_id for f in order.fills] == sim_fills
        assert order.commission > 0
        assert len(hub_sim.broker.orders()) == 1  # nothing re-sent
        # the fill also arrives as events, held by the hub for the script's next lease
        await wait_until(lambda: [e.kind for e in order.events][-2:] == ["filled", "commission"],
                         5.0, "the held fill events on the new lease's topic")  # fmt: skip
    finally:
        await client.close()
