"""Ended orders leave ib_insync's session caches; the hub still reports them (ibhub.ib.trade_cache).

A real hub on the simulator over TCP, raw ZeroMQ clients: orders fill, the hub prunes
them from ``ib.wrapper`` (trades, permId2Trade, fills) once its book holds them with
their commissions, and the ``orders`` / ``executions`` requests and the journal still
report them. Fill reports the simulator holds back until after the order was pruned
(``sim.broker.hold_reports``) still reach the book and the owner.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ibhub.hub.server import HubServer
from ibhub.orders.journal import Journal
from ibhub.protocol import (
    ExecutionsReply,
    GetCompletedOrders,
    GetExecutions,
    OrderAccepted,
    OrdersReply,
)
from ibhub.sim import SimGateway
from tests.e2e.conftest import HubFactory, Listener, RawClient
from tests.e2e.test_orders_hub import kinds, place, watching, wire_orders
from tests.helpers import wait_until


def cached(hub: HubServer, order_ids: set[int]) -> dict[str, Any]:
    """What ib_insync still holds of ``order_ids`` (and of their fills)."""
    assert hub.upstream is not None and hub.upstream.ib is not None
    w = hub.upstream.ib.wrapper
    perms = {t.order.permId for t in w.trades.values() if t.order.orderId in order_ids}
    return {
        "trades": [t for t in w.trades.values() if t.order.orderId in order_ids],
        "perm": [p for p, t in w.permId2Trade.items() if t.order.orderId in order_ids],
        "fills": [f for f in w.fills.values() if f.execution.orderId in order_ids or
                  f.execution.permId in perms],
    }  # fmt: skip


def empty(found: dict[str, Any]) -> bool:
    return not any(found.values())


async def pruning_hub(make_hub: HubFactory, **settings: Any) -> HubServer:
    hub = await make_hub()
    svc = await wire_orders(hub, **settings)
    await wait_until(svc.reconciled.is_set, 5.0, "orders reconciled")
    svc.gateway.cache.interval = 0.05  # sweep often: the test waits for it, not 1 s
    return hub


async def test_filled_orders_leave_ib_insync_but_the_hub_still_reports_them(
    make_hub: HubFactory, hub_sim: SimGateway, ipc_dir: str,
    clients: Callable[..., RawClient], listeners: Callable[..., Listener],
) -> None:  # fmt: skip
    hub = await pruning_hub(make_hub)
    c = clients(hub.rpc_endpoint)
    await c.hello("pruned")
    lst = listeners(hub.pub_endpoint, "order.", "tick.AAPL")
    await watching(lst, c)
    n = 12
    replies = [await c.request(place(c, f"p-{i}", quantity=1.0 + i)) for i in range(n)]
    assert all(isinstance(r, OrderAccepted) for r in replies), replies
    ids = {r.order_id for r in replies if isinstance(r, OrderAccepted)}
    await wait_until(lambda: kinds(lst, c.handle).count("commission") == n, 10.0, "all commissions")
    cache = hub.orders.gateway.cache
    await wait_until(lambda: empty(cached(hub, ids)), 5.0, "ib_insync caches pruned")
    assert cache.pruned_trades >= n and cache.pruned_fills >= n
    assert hub.orders.status()["ib_cache"]["trades"] == 0

    done = await c.request(GetCompletedOrders(id=c.next_id(), lease=c.lease))
    assert isinstance(done, OrdersReply)
    assert {o.order_id for o in done.orders} == ids
    assert all(o.status == "Filled" and o.remaining == 0 for o in done.orders)
    sim_by_order = {x.order_id: x for x in hub_sim.broker.executions()}
    for o in done.orders:
        assert o.filled == 1.0 + int(o.client_order_id[2:])
        assert o.commission == pytest.approx(sim_by_order[o.order_id].commission)
    execs = await c.request(GetExecutions(id=c.next_id(), lease=c.lease))
    assert isinstance(execs, ExecutionsReply)
    assert {x.exec_id for x in execs.executions} == {sim_by_order[i].exec_id for i in ids}
    assert all(x.commission is not None for x in execs.executions)

    journal = Journal.in_dir(ipc_dir)
    try:
        journaled = {r.order_id: r for r in journal.orders()}
        fills = {f.exec_id: f for f in journal.fills()}
    finally:
        journal.close()
    assert all(journaled[i].status == "Filled" for i in ids)
    assert all(fills[sim_by_order[i].exec_id].commission is not None for i in ids)


async def test_fill_reports_after_the_order_was_pruned_still_land(
    make_hub: HubFactory, hub_sim: SimGateway, ipc_dir: str,
    clients: Callable[..., RawClient], listeners: Callable[..., Listener],
) -> None:  # fmt: skip
    # The grace period ends while the execution and commission are still held back: the
    # order (Filled by its status) is pruned without them; then they arrive.
    hub = await pruning_hub(make_hub, ib_cache_grace=0.2)
    c = clients(hub.rpc_endpoint)
    await c.hello("late")
    lst = listeners(hub.pub_endpoint, "order.", "tick.AAPL")
    await watching(lst, c)
    hub_sim.broker.hold_reports = {"execDetails", "commissionReport"}
    r = await c.request(place(c, "late-1", quantity=7.0))
    assert isinstance(r, OrderAccepted), r
    book = hub.orders.book
    await wait_until(lambda: book.store.get(r.order_id).status == "Filled", 5.0, "Filled status")
    cache = hub.orders.gateway.cache
    await wait_until(lambda: cache.pruned_trades >= 1, 5.0, "pruned after the grace period")
    assert empty(cached(hub, {r.order_id}))
    assert "commission" not in kinds(lst, c.handle)

    routed = cache.late_routed
    assert hub_sim.broker.release_reports() == 2  # execDetails, commissionReport
    await wait_until(lambda: "commission" in kinds(lst, c.handle), 5.0, "late commission")
    assert cache.late_routed == routed + 2
    assert empty(cached(hub, {r.order_id}))  # routed to the book, not cached again
    sim_exec = next(x for x in hub_sim.broker.executions() if x.order_id == r.order_id)
    ev = [e for e in lst.on("order." + c.handle) if e.kind == "commission"][-1]
    assert ev.exec_id == sim_exec.exec_id
    assert ev.commission == pytest.approx(sim_exec.commission) and ev.commission > 0
    execs = await c.request(GetExecutions(id=c.next_id(), lease=c.lease))
    assert isinstance(execs, ExecutionsReply)
    [x] = execs.executions
    assert (x.exec_id, x.shares) == (sim_exec.exec_id, 7.0)
    assert x.commission == pytest.approx(sim_exec.commission)
    done = await c.request(GetCompletedOrders(id=c.next_id(), lease=c.lease))
    assert isinstance(done, OrdersReply)
    [o] = done.orders
    assert (o.status, o.filled, o.commission) == ("Filled", 7.0, pytest.approx(sim_exec.commission))
    journal = Journal.in_dir(ipc_dir)
    try:
        [fill] = journal.fills(r.order_id)
    finally:
        journal.close()
    assert fill.commission == pytest.approx(sim_exec.commission)


async def test_a_commission_late_within_the_grace_period_keeps_the_order_cached(
    make_hub: HubFactory, hub_sim: SimGateway,
    clients: Callable[..., RawClient], listeners: Callable[..., Listener],
) -> None:  # fmt: skip
    hub = await pruning_hub(make_hub)  # the default grace: 60 s
    c = clients(hub.rpc_endpoint)
    await c.hello("patient")
    lst = listeners(hub.pub_endpoint, "order.", "tick.AAPL")
    await watching(lst, c)
    hub_sim.broker.hold_reports = {"commissionReport"}
    r = await c.request(place(c, "wait-1"))
    assert isinstance(r, OrderAccepted), r
    await wait_until(lambda: "filled" in kinds(lst, c.handle), 5.0, "filled")
    cache = hub.orders.gateway.cache
    sweeps = cache.sweeps
    await wait_until(lambda: cache.sweeps >= sweeps + 3, 5.0, "three sweeps")
    assert len(cached(hub, {r.order_id})["trades"]) == 1  # waits for its commission
    routed = cache.late_routed
    hub_sim.broker.release_reports()
    await wait_until(lambda: "commission" in kinds(lst, c.handle), 5.0, "commission")
    assert cache.late_routed == routed  # ib_insync still had the fill: the usual path
    await wait_until(lambda: empty(cached(hub, {r.order_id})), 5.0, "pruned once complete")


async def test_a_reconnect_relists_ended_orders_and_they_are_pruned_again(
    make_hub: HubFactory, hub_sim: SimGateway,
    clients: Callable[..., RawClient], listeners: Callable[..., Listener],
) -> None:  # fmt: skip
    hub = await pruning_hub(make_hub)
    c = clients(hub.rpc_endpoint)
    await c.hello("again")
    lst = listeners(hub.pub_endpoint, "order.", "tick.AAPL")
    await watching(lst, c)
    replies = [await c.request(place(c, f"r-{i}")) for i in range(4)]
    ids = {r.order_id for r in replies if isinstance(r, OrderAccepted)}
    await wait_until(lambda: kinds(lst, c.handle).count("commission") == 4, 5.0, "commissions")
    await wait_until(lambda: empty(cached(hub, ids)), 5.0, "pruned")
    seen = list(kinds(lst, c.handle))
    svc = hub.orders
    pruned = svc.gateway.cache.pruned_trades
    svc.reconciled.clear()
    await hub_sim.restart(0.1)
    # ib_insync's start-up sync re-lists the day's ended orders and executions...
    await wait_until(svc.reconciled.is_set, 10.0, "reconciled after the reconnect")
    # ...and the scan after reconciling prunes them again, without a second event
    await wait_until(lambda: empty(cached(hub, ids)), 5.0, "pruned again")
    assert svc.gateway.cache.pruned_trades >= pruned + 4  # they were cached again
    assert kinds(lst, c.handle) == seen
    done = await c.request(GetCompletedOrders(id=c.next_id(), lease=c.lease))
    assert isinstance(done, OrdersReply)
    assert {o.order_id for o in done.orders} == ids
    assert all(o.status == "Filled" and o.commission > 0 for o in done.orders)
