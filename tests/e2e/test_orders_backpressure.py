"""Back-pressure: an order the hub acknowledges goes upstream within ``max_order_delay``;
what could not is refused ``busy`` at once, never acknowledged and left waiting.

Four scripts, each within its own rate limit (20 orders/s, burst 50), flood the hub
with 50 market orders each: 200 orders against an upstream budget of 40 messages/s.
Before back-pressure they were all acknowledged and the last waited ~5 s in the pacer
(and a hub killed meanwhile left them "not sent"). Now about 2 s worth is taken and the
rest refused ``busy``, with the expected delay and the limit in the message.
"""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ibhub import wire
from ibhub.hub.ops.health import DEGRADED, health_report
from ibhub.orders.journal import JOURNAL_FILE, Journal
from ibhub.protocol import (
    ContractSpec,
    Error,
    ErrorCode,
    GetStatus,
    OrderAccepted,
    OrderEvent,
    OrderRejected,
    PlaceOrder,
    RejectReason,
    Reply,
    StatusReply,
    Subscribe,
    Subscribed,
)
from ibhub.sim import SimGateway
from ibhub.tws.pacing import Priority
from tests.e2e.conftest import HubFactory, Listener, RawClient
from tests.e2e.test_orders_hub import watching, wire_orders
from tests.e2e.test_orders_kill import REPO, kill
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(120)

AAPL = 265598
SCRIPTS = ("flood0", "flood1", "flood2", "flood3")
PER_SCRIPT = 50  # each script's order_burst: within its own rate limit
MAX_DELAY = 2.0  # the default max_order_delay
SLACK = 1.0  # loop lag and the Gateway round trip on a loaded machine


def order(c: RawClient, coid: str) -> PlaceOrder:
    return PlaceOrder(id=c.next_id(), lease=c.lease, client_order_id=coid,
                      contract=ContractSpec(symbol="AAPL"), action="BUY", quantity=1.0,
                      order_type="MKT")  # fmt: skip


async def flood(scripts: list[RawClient]) -> list[tuple[str, Reply, float]]:
    """Every script sends all its orders without waiting, then reads its replies:
    (script, reply, monotonic time the reply arrived)."""
    for c, name in zip(scripts, SCRIPTS, strict=True):
        for i in range(PER_SCRIPT):
            await c.send_raw(wire.encode(order(c, f"{name}-{i}")))

    async def replies(c: RawClient, name: str) -> list[tuple[str, Reply, float]]:
        return [(name, await c.recv_reply(timeout=30), time.monotonic())
                for _ in range(PER_SCRIPT)]  # fmt: skip

    per_script = await asyncio.gather(*(replies(c, n) for c, n in zip(scripts, SCRIPTS,
                                                                       strict=True)))
    return [r for rs in per_script for r in rs]


def split(replies: list[tuple[str, Reply, float]]) -> tuple[list[OrderAccepted],
                                                            list[OrderRejected]]:
    acked = [r for _, r, _ in replies if isinstance(r, OrderAccepted)]
    refused = [r for _, r, _ in replies if isinstance(r, OrderRejected)]
    assert len(acked) + len(refused) == len(replies)
    return acked, refused


def check_refusals(refused: list[OrderRejected]) -> None:
    assert refused, "200 orders at 40/s: some must be refused"
    assert {r.reason for r in refused} == {RejectReason.BUSY}, {r.reason for r in refused}
    assert all("max_order_delay=2s" in r.message or "pacer_queue_per_lease" in r.message
               for r in refused), refused[0].message  # fmt: skip
    assert any("would wait about" in r.message for r in refused)


async def test_flood_acknowledged_orders_go_within_the_bound(
    make_hub: HubFactory, hub_sim: SimGateway, clients: Callable[..., RawClient],
    listeners: Callable[..., Listener],
) -> None:  # fmt: skip
    hub = await make_hub()
    svc = await wire_orders(hub)  # the defaults: 20/s per lease, burst 50, 2 s, 50 per lease
    await wait_until(svc.reconciled.is_set, 5.0, "reconciled")
    lst = listeners(hub.pub_endpoint, "order.", "tick.AAPL")
    scripts = [clients(hub.rpc_endpoint) for _ in SCRIPTS]
    for c, name in zip(scripts, SCRIPTS, strict=True):
        await c.hello(name)
    await watching(lst, scripts[0])  # the listener is connected before the flood

    replies = await flood(scripts)
    acked, refused = split(replies)
    check_refusals(refused)
    print(f"{len(acked)} acknowledged, {len(refused)} refused busy")
    store = svc.book.store  # type: ignore[union-attr]
    ids = {a.order_id for a in acked}

    def all_filled() -> bool:
        return all((rec := store.get(i)) is not None and rec.status == "Filled" for i in ids)

    await wait_until(all_filled, 15.0, "every acknowledged order filled")
    # acknowledged -> the first word from the Gateway (submitted, or filled at once),
    # both stamped by the hub when it published them
    acked_at: dict[int, int] = {}
    seen_at: dict[int, int] = {}

    def stamped() -> bool:
        for events in lst.events.values():
            for ev in events:
                if not isinstance(ev, OrderEvent):
                    continue
                if ev.kind == "acknowledged":
                    acked_at.setdefault(ev.order_id, ev.ts)
                elif ev.kind in ("submitted", "partially_filled", "filled"):
                    seen_at.setdefault(ev.order_id, ev.ts)
        return set(acked_at) == set(seen_at) == ids

    await wait_until(stamped, 5.0, "the listener has every order's events")
    delays = sorted((seen_at[i] - acked_at[i]) / 1e9 for i in ids)
    waited = hub.pacer.max_wait_by_priority[Priority.ORDER]  # type: ignore[union-attr]
    print(f"acknowledged -> at the Gateway: p50 {statistics.median(delays):.2f}s, "
          f"max {delays[-1]:.2f}s; longest pacer wait of an order {waited:.2f}s")
    assert waited <= MAX_DELAY + SLACK / 2
    assert delays[-1] <= MAX_DELAY + SLACK
    # nothing acknowledged ended "not sent"; the Gateway has exactly these orders
    assert all((rec := store.get(i)) is not None and rec.sent and "not sent" not in rec.message
               for i in ids)
    at_sim = {o.order_id for o in hub_sim.broker.orders()}
    assert at_sim == ids
    assert hub_sim.broker.positions()[AAPL][0] == pytest.approx(len(ids))

    # operators see it: status, /health (degraded while scripts are told "busy"), /metrics
    assert svc.settings.max_order_delay == MAX_DELAY
    status = await scripts[0].request(GetStatus(id=scripts[0].next_id()))
    assert isinstance(status, StatusReply)
    assert status.busy_refusals == len(refused) and status.max_order_delay == MAX_DELAY
    assert status.order_wait_max == pytest.approx(waited, abs=0.01)
    assert status.upstream_queue_per_lease == 50 and status.upstream_queue_max == 1000
    doc, code = health_report(hub)
    assert code == 200 and doc["status"] == DEGRADED
    assert any("refused busy" in r for r in doc["reasons"]), doc["reasons"]
    assert doc["pacing"]["refused"] == len(refused) and doc["pacing"]["max_order_delay"] == 2.0


async def start_hub(sim: SimGateway, ipc_dir: str, tag: str,
                    overrides: dict[str, Any]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.e2e.orders_hub_child", str(sim.port),
        f"ipc://{ipc_dir}/{tag}-pub", f"ipc://{ipc_dir}/{tag}-rpc", ipc_dir,
        json.dumps(overrides), stdout=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line.strip() == b"READY", line
    return proc


async def test_flood_then_kill_leaves_nothing_acknowledged_unsent(
    hub_sim: SimGateway, ipc_dir: str, clients: Callable[..., RawClient]
) -> None:
    """The hub (a process of its own, default limits) is killed with -9 once the bound has
    passed since the last acknowledgement: every acknowledged order is at the Gateway
    and in the journal as such; none is "not sent" after the restart."""
    hub = await start_hub(hub_sim, ipc_dir, "a", {"hub": {}, "orders": {}})
    try:
        scripts = [clients(f"ipc://{ipc_dir}/a-rpc") for _ in SCRIPTS]
        for c, name in zip(scripts, SCRIPTS, strict=True):
            await c.hello(name)
        replies = await flood(scripts)
        acked, refused = split(replies)
        check_refusals(refused)
        last_ack = max(t for _, r, t in replies if isinstance(r, OrderAccepted))
        ids = {a.order_id for a in acked}

        def arrived() -> bool:
            return ids <= {o.order_id for o in hub_sim.broker.orders()}

        await wait_until(arrived, MAX_DELAY + SLACK, "every acknowledged order at the Gateway")
        print(f"{len(acked)} acknowledged, all at the Gateway "
              f"{time.monotonic() - last_ack:.2f}s after the last acknowledgement")
        hub.send_signal(signal.SIGKILL)
        await asyncio.wait_for(hub.wait(), 10.0)
        for c in scripts:
            await c.stop_heartbeat()
        await wait_until(lambda: 0 not in hub_sim.connected_client_ids(), 5.0, "hub gone")

        hub = await start_hub(hub_sim, ipc_dir, "b", {"hub": {}, "orders": {}})
        reader = Journal(Path(ipc_dir) / JOURNAL_FILE, readonly=True)
        rows = {r.order_id: r for r in reader.orders()}
        reader.close()
        assert set(rows) == ids  # refused orders were never journaled
        lost = [r for r in rows.values() if r.status == "Inactive" or "not sent" in r.message]
        assert lost == []
        assert all(r.status == "Filled" and r.filled == 1.0 for r in rows.values())
        assert len(hub_sim.broker.orders()) == len(ids)
    finally:
        await kill(hub)


async def test_queries_and_subscriptions_are_bounded_too(
    make_hub: HubFactory, clients: Callable[..., RawClient]
) -> None:
    """Contract lookups and new market-data lines may queue, but not beyond the overall
    bound: past it the request gets a ``busy`` error naming the limit, and the hub
    serves on once the queue drains."""
    hub = await make_hub(pacer_rate=2.0, pacer_queue_max=3)  # burst 5, then one per 0.5 s
    c = clients(hub.rpc_endpoint)
    await c.hello("many")
    symbols = ("AAPL", "MSFT", "TSLA", "NVDA", "AMZN", "GOOGL", "META", "AMD", "NFLX", "JPM",
               "XOM", "BAC")  # fmt: skip
    reqs = [Subscribe(id=c.next_id(), lease=c.lease, contract=ContractSpec(symbol=s))
            for s in symbols]  # fmt: skip
    for req in reqs:
        await c.send_raw(wire.encode(req))
    replies = [await c.recv_reply(timeout=30) for _ in reqs]
    busy = [r for r in replies if isinstance(r, Error) and r.code == ErrorCode.BUSY]
    ok = [r for r in replies if isinstance(r, Subscribed)]
    assert busy and ok and len(busy) + len(ok) == len(reqs), replies
    assert all("pacer_queue_max=3" in r.message for r in busy), busy[0].message
    pacer = hub.pacer
    assert pacer is not None and pacer.refused >= len(busy)
    await wait_until(lambda: pacer.queued == 0, 20.0, "the queue drained")
    again = await c.request(Subscribe(id=c.next_id(), lease=c.lease,
                                      contract=ContractSpec(symbol=symbols[-1])))  # fmt: skip
    assert isinstance(again, Subscribed), again
