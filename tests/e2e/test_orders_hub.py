"""Orders through the hub over ZeroMQ, against the simulated Gateway.

Raw clients (ibhub.wire + DEALER sockets, no SDK) place, retry, cancel and watch their
``order.<lease>`` topics; the simulator's book (``sim.broker``) and request counters say
what really reached the Gateway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ibhub import wire
from ibhub.config import HubSettings
from ibhub.hub.server import HubServer, attach_orders
from ibhub.orders.service import OrderService
from ibhub.protocol import (
    PROTOCOL_VERSION,
    CancelOrder,
    CancelRequested,
    ContractSpec,
    GetHistoricalBars,
    GetOpenOrders,
    GetPositions,
    GetStatus,
    Hello,
    HistoricalBarsReply,
    OrderAccepted,
    OrderEvent,
    OrderRejected,
    PlaceOrder,
    PositionsReply,
    RejectReason,
    StatusReply,
    Welcome,
)
from ibhub.sim import SimConfig, SimGateway
from ibhub.tws.pacing import Priority
from tests.e2e.conftest import FAST, HubFactory, Listener, RawClient
from tests.helpers import wait_until

PLACE_ORDER = 3  # TWS message id of placeOrder (what sim.request_counts counts)


async def wire_orders(hub: HubServer, **overrides: Any) -> OrderService:
    """The hub's order service: its own when ``hub.orders`` exists, else one attached now
    (with ``overrides`` of OrderSettings fields)."""
    existing = getattr(hub, "orders", None)
    if existing is not None and not overrides:
        return existing
    if existing is not None:  # replace the hub's own service by one with these settings
        await existing.stop()
        hub._services.remove(existing)
    svc = await attach_orders(hub, **overrides)
    hub.orders = svc
    return svc


def place(client: RawClient, coid: str, **kw: Any) -> PlaceOrder:
    fields: dict[str, Any] = {"id": client.next_id(), "lease": client.lease,
                              "client_order_id": coid, "contract": ContractSpec(symbol="AAPL"),
                              "action": "BUY", "quantity": 10.0, "order_type": "MKT"}  # fmt: skip
    fields.update(kw)
    return PlaceOrder(**fields)


def kinds(listener: Listener, lease: str) -> list[str]:
    return [e.kind for e in listener.on("order." + lease) if isinstance(e, OrderEvent)]


@pytest.fixture
async def order_hub(make_hub: HubFactory) -> HubServer:
    hub = await make_hub()
    svc = await wire_orders(hub)
    await wait_until(svc.reconciled.is_set, 5.0, "orders reconciled")
    return hub


async def watching(lst: Listener, client: RawClient) -> None:
    """Subscribe ``client`` to AAPL and wait for a tick on ``lst``: the SUB socket is
    connected (no slow-joiner loss) and the hub knows a last price (price band)."""
    await client.subscribe("AAPL")
    await wait_until(lambda: lst.on("tick.AAPL"), 5.0, "listener connected")


async def test_two_scripts_see_only_their_own_orders(
    order_hub: HubServer, hub_sim: SimGateway, clients: Callable[..., RawClient],
    listeners: Callable[..., Listener],
) -> None:  # fmt: skip
    alice, bob = clients(order_hub.rpc_endpoint), clients(order_hub.rpc_endpoint)
    await alice.hello("alice")
    await bob.hello("bob")
    lst = listeners(order_hub.pub_endpoint, "order.", "tick.AAPL")
    await watching(lst, alice)
    a = await alice.request(place(alice, "a-1"))
    b = await bob.request(place(bob, "b-1", action="SELL", quantity=5.0))
    assert isinstance(a, OrderAccepted) and isinstance(b, OrderAccepted), (a, b)
    await wait_until(lambda: "commission" in kinds(lst, alice.handle)
                     and "commission" in kinds(lst, bob.handle), 5.0, "both fills")  # fmt: skip
    assert kinds(lst, alice.handle) == ["acknowledged", "submitted", "filled", "commission"]
    assert {e.owner for e in lst.on("order." + alice.handle)} == {"alice"}
    assert {e.owner for e in lst.on("order." + bob.handle)} == {"bob"}
    assert {e.order_id for e in lst.on("order." + alice.handle)} == {a.order_id}
    assert {e.order_id for e in lst.on("order." + bob.handle)} == {b.order_id}
    assert sorted(o.order_id for o in hub_sim.broker.orders()) == sorted([a.order_id, b.order_id])
    # market order filled with IB's commission
    fill = next(e for e in lst.on("order." + alice.handle) if e.kind == "commission")
    sim_exec = next(x for x in hub_sim.broker.executions() if x.order_id == a.order_id)
    assert fill.commission == pytest.approx(sim_exec.commission) and fill.commission > 0
    assert fill.status == "Filled" and fill.filled == 10.0
    pos = await alice.request(GetPositions(id=alice.next_id()))
    assert isinstance(pos, PositionsReply)
    await wait_until(lambda: order_hub.orders.account.positions(), 5.0, "positions")


async def test_retried_client_order_id_is_one_order(
    order_hub: HubServer, hub_sim: SimGateway, clients: Callable[..., RawClient]
) -> None:
    c = clients(order_hub.rpc_endpoint)
    await c.hello("retrier")
    replies = [await c.request(place(c, "once")) for _ in range(3)]
    accepted = [r for r in replies if isinstance(r, OrderAccepted)]
    assert len(accepted) == 3, replies
    assert len({r.order_id for r in accepted}) == 1
    assert [r.duplicate for r in accepted] == [False, True, True]
    # a new lease of the same script (reconnect) still finds it
    c2 = clients(order_hub.rpc_endpoint)
    await c2.hello("retrier")
    again = await c2.request(place(c2, "once"))
    assert isinstance(again, OrderAccepted) and again.duplicate
    await wait_until(lambda: hub_sim.broker.orders(), 5.0, "order at the simulator")
    assert len(hub_sim.broker.orders()) == 1 and hub_sim.request_counts[PLACE_ORDER] == 1


async def test_invalid_orders_never_reach_the_gateway(
    order_hub: HubServer, hub_sim: SimGateway, clients: Callable[..., RawClient],
    listeners: Callable[..., Listener],
) -> None:  # fmt: skip
    c = clients(order_hub.rpc_endpoint)
    await c.hello("careless")
    lst = listeners(order_hub.pub_endpoint, "tick.AAPL")
    await watching(lst, c)  # the hub now knows AAPL's last price
    before = hub_sim.request_counts[PLACE_ORDER]
    cases = [
        (place(c, "q0", quantity=0.0), RejectReason.BAD_QUANTITY),
        (place(c, "qmax", quantity=1e7), RejectReason.QUANTITY_LIMIT),
        (place(c, "act", action="HOLD"), RejectReason.BAD_ACTION),
        (place(c, "typ", order_type="PEG"), RejectReason.BAD_ORDER_TYPE),
        (place(c, "lmt", order_type="LMT"), RejectReason.MISSING_LIMIT_PRICE),
        (place(c, "band", order_type="LMT", limit_price=1.0), RejectReason.PRICE_BAND),
        (place(c, "neg", order_type="LMT", limit_price=-5.0), RejectReason.BAD_PRICE),
        (place(c, "tif", tif="OPG"), RejectReason.BAD_TIF),
        (place(c, "nope", contract=ContractSpec(symbol="NOSUCH")), RejectReason.UNKNOWN_CONTRACT),
    ]
    for req, reason in cases:
        reply = await c.request(req)
        assert isinstance(reply, OrderRejected), (req, reply)
        assert reply.reason == reason, (req.client_order_id, reply)
        assert reply.message
    reader = clients(order_hub.rpc_endpoint)
    reply = await reader.request(Hello(id=reader.next_id(), name="viewer", role="readonly",
                                              protocol=PROTOCOL_VERSION))
    assert isinstance(reply, Welcome)
    reader.lease = reply.token
    refused = await reader.request(place(reader, "ro"))
    assert isinstance(refused, OrderRejected) and refused.reason == RejectReason.READ_ONLY_LEASE
    assert hub_sim.request_counts[PLACE_ORDER] == before == 0
    assert hub_sim.broker.orders() == []


async def test_limit_rests_then_cancel(
    order_hub: HubServer, hub_sim: SimGateway, clients: Callable[..., RawClient],
    listeners: Callable[..., Listener],
) -> None:  # fmt: skip
    c = clients(order_hub.rpc_endpoint)
    await c.hello("patient")
    lst = listeners(order_hub.pub_endpoint, "order.", "tick.AAPL")
    await watching(lst, c)
    price = round(hub_sim.broker.price_of(265598) * 0.95, 2)
    r = await c.request(place(c, "rest", order_type="LMT", limit_price=price))
    assert isinstance(r, OrderAccepted), r
    await wait_until(lambda: "submitted" in kinds(lst, c.handle), 5.0, "resting")
    opened = await c.request(GetOpenOrders(id=c.next_id(), lease=c.lease))
    assert [o.client_order_id for o in opened.orders] == ["rest"]  # type: ignore[attr-defined]
    other = clients(order_hub.rpc_endpoint)
    await other.hello("thief")
    stolen = await other.request(CancelOrder(id=other.next_id(), lease=other.lease,
                                             order_id=r.order_id))  # fmt: skip
    assert isinstance(stolen, OrderRejected) and stolen.reason == RejectReason.NOT_OWNER
    cancel = await c.request(CancelOrder(id=c.next_id(), lease=c.lease, order_id=r.order_id))
    assert isinstance(cancel, CancelRequested) and cancel.order_ids == [r.order_id]
    await wait_until(lambda: "cancelled" in kinds(lst, c.handle), 5.0, "cancelled")
    assert [o.status for o in hub_sim.broker.orders()] == ["Cancelled"]


async def test_fill_while_the_hub_is_down_is_published_after_restart(
    make_hub: HubFactory, hub_sim: SimGateway, clients: Callable[..., RawClient],
    listeners: Callable[..., Listener],
) -> None:  # fmt: skip
    hub = await make_hub()
    await wait_until((await wire_orders(hub)).reconciled.is_set, 5.0, "reconciled")
    c = clients(hub.rpc_endpoint)
    await c.hello("sleeper")
    lst = listeners(hub.pub_endpoint, "order.", "tick.AAPL")
    await watching(lst, c)
    ask = hub_sim.market.quote(265598).ask
    r = await c.request(place(c, "away", order_type="LMT", limit_price=round(ask - 0.02, 2)))
    assert isinstance(r, OrderAccepted), r
    await wait_until(lambda: "submitted" in kinds(lst, c.handle), 5.0, "resting")
    await c.stop_heartbeat()
    await hub.stop()
    for _ in range(20_000):  # the market walks on without the hub until the order fills
        if hub_sim.broker.orders()[0].status == "Filled":
            break
        hub_sim.market.step(265598)
    assert hub_sim.broker.orders()[0].status == "Filled"

    hub2 = await make_hub()  # same data directory: the journal survives
    await wait_until((await wire_orders(hub2)).reconciled.is_set, 5.0, "reconciled")
    watcher = clients(hub2.rpc_endpoint)
    await watcher.hello("watcher")
    lst2 = listeners(hub2.pub_endpoint, "order.", "tick.AAPL")
    await watching(lst2, watcher)
    back = clients(hub2.rpc_endpoint)
    await back.hello("sleeper")  # the script comes back under its name, with a new lease
    await wait_until(lambda: "commission" in kinds(lst2, back.handle), 5.0, "held fill delivered")
    assert kinds(lst2, back.handle) == ["filled", "commission"]
    ev = lst2.on("order." + back.handle)[0]
    assert ev.order_id == r.order_id and ev.client_order_id == "away" and ev.status == "Filled"
    assert len(hub_sim.broker.orders()) == 1  # nothing re-sent
    again = await back.request(place(back, "away", order_type="LMT",
                                     limit_price=round(ask - 0.02, 2)))  # fmt: skip
    assert isinstance(again, OrderAccepted) and again.duplicate and again.status == "Filled"


async def test_live_account_refuses_orders_without_allow_live(
    ipc_dir: str, clients: Callable[..., RawClient]
) -> None:
    cfg = SimConfig(host="127.0.0.1", port=0, seed=7, tick_rate=0.0, accounts=("U7654321",))
    async with SimGateway(cfg) as live_sim:
        settings = HubSettings.model_validate(
            {"gateway_host": "127.0.0.1", "gateway_port": live_sim.port, "data_dir": ipc_dir,
             "pub": f"ipc://{ipc_dir}/live-pub", "rpc": f"ipc://{ipc_dir}/live-rpc", **FAST}
        )  # fmt: skip
        async with HubServer(settings) as hub:
            await wait_until(lambda: hub.upstream is not None and hub.upstream.connected, 5.0,
                             "connected")  # fmt: skip
            svc = await wire_orders(hub)
            await wait_until(svc.reconciled.is_set, 5.0, "reconciled")
            assert svc.risk.trading_blocked is not None and "U7654321" in svc.risk.trading_blocked
            c = clients(hub.rpc_endpoint)
            await c.hello("trader")
            reply = await c.request(place(c, "live-1"))
            assert isinstance(reply, OrderRejected) and reply.reason == RejectReason.LIVE_TRADING
            assert "--live" in reply.message
            assert live_sim.request_counts[PLACE_ORDER] == 0
            await svc.stop()


async def test_burst_of_500_orders_never_trips_ib_pacing(
    make_hub: HubFactory, hub_sim: SimGateway, clients: Callable[..., RawClient],
    listeners: Callable[..., Listener],
) -> None:  # fmt: skip
    """Five scripts fire 100 orders each at once. The hub paces them to 40 msgs/s, below
    the simulated Gateway's 50/s: every order arrives (none dropped with error 100) and
    fills. Takes ~13 s: 500 messages at 40/s. Back-pressure is opened wide here (the
    orders may wait 13 s): this test is about IB's pacing, test_orders_backpressure.py
    about the bound."""
    hub = await make_hub(pacer_queue_per_lease=1000)
    svc = await wire_orders(hub, order_rate=1000.0, order_burst=1000.0, max_order_delay=60.0)
    await wait_until(svc.reconciled.is_set, 5.0, "reconciled")
    lst = listeners(hub.pub_endpoint, "order.")
    scripts = [clients(hub.rpc_endpoint) for _ in range(5)]
    for n, c in enumerate(scripts):
        await c.hello(f"burst{n}")
    for n, c in enumerate(scripts):
        for i in range(100):
            await c.send_raw(wire.encode(place(c, f"b{n}-{i}", quantity=1.0)))
    replies = [await c.recv_reply(timeout=10) for c in scripts for _ in range(100)]
    assert all(isinstance(r, OrderAccepted) and not r.duplicate for r in replies)
    await wait_until(lambda: len(hub_sim.broker.orders()) == 500, 30.0, "500 orders at the sim")
    await wait_until(lambda: all(o.status == "Filled" for o in hub_sim.broker.orders()), 10.0,
                     "500 fills")  # fmt: skip
    rejected = [e for t, evs in lst.events.items() for e in evs
                if isinstance(e, OrderEvent) and e.kind == "rejected"]  # fmt: skip
    assert rejected == []
    # (after the fills: the new position's PnL subscription goes through the pacer too)
    await wait_until(lambda: svc.pacer.queued == 0, 5.0, "the pacer's queue drained")
    assert svc.pacer.sent >= 500


async def test_cancel_jumps_the_queue_of_orders(
    make_hub: HubFactory, hub_sim: SimGateway, clients: Callable[..., RawClient],
    listeners: Callable[..., Listener],
) -> None:  # fmt: skip
    """ib_insync's own throttle is FIFO; the hub's pacer sends a cancel before the
    orders queued ahead of it."""
    hub = await make_hub(pacer_queue_per_lease=1000)
    svc = await wire_orders(hub, order_rate=1000.0, order_burst=1000.0, max_order_delay=60.0)
    await wait_until(svc.reconciled.is_set, 5.0, "reconciled")
    c = clients(hub.rpc_endpoint)
    await c.hello("queue")
    lst = listeners(hub.pub_endpoint, "order.", "tick.AAPL")
    await watching(lst, c)
    price = round(hub_sim.broker.price_of(265598) * 0.95, 2)
    for i in range(80):
        await c.send_raw(wire.encode(place(c, f"q{i}", order_type="LMT", limit_price=price)))
    first = await c.recv_reply()
    assert isinstance(first, OrderAccepted) and first.client_order_id == "q0"
    for _ in range(79):
        assert isinstance(await c.recv_reply(), OrderAccepted)
    await wait_until(lambda: any(o.order_id == first.order_id for o in hub_sim.broker.orders()),
                     5.0, "first order at the sim")  # fmt: skip
    cancel = await c.request(CancelOrder(id=c.next_id(), lease=c.lease, order_id=first.order_id))
    assert isinstance(cancel, CancelRequested)
    await wait_until(lambda: hub_sim.request_counts[4] == 1, 5.0, "cancel at the sim")
    assert hub_sim.request_counts[PLACE_ORDER] < 40  # most orders were still queued
    await wait_until(lambda: "cancelled" in kinds(lst, c.handle), 5.0, "cancelled event")


async def test_all_upstream_traffic_shares_one_pacer(
    order_hub: HubServer, hub_sim: SimGateway, clients: Callable[..., RawClient]
) -> None:
    pacer = order_hub.pacer
    assert pacer is not None and order_hub.orders.pacer is pacer
    before = dict(pacer.sent_by_priority)
    c = clients(order_hub.rpc_endpoint)
    await c.hello("everything")
    await c.subscribe("MSFT")
    bars = await c.request(GetHistoricalBars(id=c.next_id(), contract=ContractSpec(symbol="MSFT"),
                                             duration="1 D", bar_size="1 hour"))  # fmt: skip
    assert isinstance(bars, HistoricalBarsReply), bars
    placed = await c.request(place(c, "paced"))
    assert isinstance(placed, OrderAccepted), placed
    await wait_until(lambda: pacer.sent_by_priority[Priority.ORDER] > before[Priority.ORDER],
                     5.0, "order sent through the pacer")  # fmt: skip
    for priority in (Priority.SUBSCRIPTION, Priority.QUERY):
        assert pacer.sent_by_priority[priority] > before[priority], priority
    # (the fill's new position asks for its PnL through the pacer too: let it go out)
    await wait_until(lambda: pacer.queued == 0, 5.0, "the pacer's queue drained")
    status = await c.request(GetStatus(id=c.next_id()))
    assert isinstance(status, StatusReply)
    assert status.upstream_queue == {"cancel": 0, "order": 0, "subscription": 0, "query": 0}
    assert status.trading == "allowed"
