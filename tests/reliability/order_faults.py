"""Orders across faults: the hub killed -9 mid-flow, and requests during an outage.

Accounting, for every order a script sent:

* *acknowledged* = the hub answered ``OrderAccepted`` (journaled, queued upstream);
* *lost* = acknowledged, yet neither at the Gateway (``sim.broker.orders()``) nor
  reported to its owner as not sent (an ``order.<lease>`` "rejected" event or an
  ``Inactive`` journal row saying so), i.e. silently gone;
* *duplicated* = an ``orderRef`` (owner + client order id) twice at the Gateway.

The kill test reuses the e2e helpers (``tests/e2e/test_orders_kill.py``: the hub child
process, kill, order builder) and extends the single kill there to repeated kill and
restart cycles on one journal and one Gateway.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import zmq
import zmq.asyncio

from ibhub import wire
from ibhub.orders.journal import JOURNAL_FILE, Journal
from ibhub.orders.port import parse_order_ref
from ibhub.protocol import OrderAccepted, OrderEvent, OrderRejected, RejectReason, UpstreamState
from ibhub.sim import SimConfig, SimGateway
from tests.e2e.conftest import RawClient
from tests.e2e.test_orders_hub import place, wire_orders
from tests.e2e.test_orders_kill import kill, order, start_hub
from tests.reliability.harness import SEED, Figures, Rig, now, wait_until

PLACE_ORDER = 3  # TWS message id of placeOrder in sim.request_counts
SCRIPTS = ("s0", "s1", "s2")


def duplicates(sim: SimGateway) -> int:
    refs = Counter(o.order_ref for o in sim.broker.orders())
    return sum(n - 1 for n in refs.values() if n > 1)


async def hub_killed_cycles(cycles: int, per_script: int = 40, seed: int = SEED) -> Figures:
    """Kill -9 the hub at a random acknowledgement of a burst, restart it, ``cycles`` times."""
    rng = random.Random(seed)
    fig = Figures("hub SIGKILL mid order flow", notes={"seed": seed})
    data = tempfile.mkdtemp(prefix="ibhub-kill-")
    ctx = zmq.asyncio.Context()
    acked_total = journaled_total = retried_dup = 0
    delays: list[float] = []
    contradicted: list[tuple[int, str, str]] = []  # journal "not sent" yet at the Gateway
    made: list[RawClient] = []
    async with SimGateway(SimConfig(host="127.0.0.1", port=0, seed=seed, tick_rate=40.0)) as sim:
        hub = await start_hub(sim, data, "h0")
        try:
            for n in range(cycles):
                fig.attempts += 1
                rpc = f"ipc://{data}/h{n}-rpc"
                scripts = [RawClient(ctx, rpc) for _ in SCRIPTS]
                made.extend(scripts)
                for c, name in zip(scripts, SCRIPTS, strict=True):
                    await c.hello(name)
                acked: dict[tuple[str, str], int] = {}
                # Kill at a random acknowledgement, then a random moment later: early
                # kills hit the journal, late ones the pacer sending to the Gateway.
                kill_after = rng.randrange(1, len(SCRIPTS) * per_script)
                kill_delay = rng.choice([0.0, 0.0, rng.uniform(0.0, 1.5)])
                reached = asyncio.Event()

                async def collect(c: RawClient, name: str, coids: dict[int, str],
                                  acked: dict[tuple[str, str], int] = acked,
                                  kill_after: int = kill_after,
                                  reached: asyncio.Event = reached) -> None:
                    while True:
                        reply = await c.recv_reply(timeout=30)
                        if isinstance(reply, OrderAccepted):
                            acked[(name, coids[reply.id])] = reply.order_id
                            if len(acked) == kill_after:
                                reached.set()

                readers = []
                for c, name in zip(scripts, SCRIPTS, strict=True):
                    coids: dict[int, str] = {}
                    readers.append(asyncio.create_task(collect(c, name, coids)))
                    for i in range(per_script):
                        req = order(c, f"{name}-c{n}-{i}")
                        coids[req.id] = req.client_order_id
                        await c.send_raw(wire.encode(req))
                await asyncio.wait_for(reached.wait(), 30.0)
                if kill_delay:
                    await asyncio.sleep(kill_delay)  # the fault's timing, not a wait
                hub.send_signal(signal.SIGKILL)
                await asyncio.wait_for(hub.wait(), 30.0)
                delays.append(kill_delay)
                for t in readers:
                    t.cancel()
                await asyncio.gather(*readers, return_exceptions=True)
                for c in scripts:
                    await c.stop_heartbeat()
                await wait_until(lambda: 0 not in sim.connected_client_ids(), 5.0, "hub gone")
                t0 = now()
                hub = await start_hub(sim, data, f"h{n + 1}")  # READY = reconciled
                fig.recover_s.append(now() - t0)
                reader = Journal(Path(data) / JOURNAL_FILE, readonly=True)
                rows = {r.order_id: r for r in reader.orders()}
                reader.close()
                at_sim = {o.order_id: o for o in sim.broker.orders()}
                for (owner, coid), oid in acked.items():
                    row = rows.get(oid)
                    ok = row is not None and (row.owner, row.client_order_id) == (owner, coid)
                    reported = ok and row is not None and row.status == "Inactive"
                    if not ok or (oid not in at_sim and not reported):
                        fig.lost += 1
                for oid, o in at_sim.items():
                    row = rows.get(oid)
                    if row is None or parse_order_ref(o.order_ref) != (row.owner,
                                                                        row.client_order_id):
                        fig.lost += 1  # the Gateway has an order the journal cannot place
                    elif row.status == "Inactive" and o.status != "Inactive":
                        contradicted.append((oid, row.message, str(o.status)))
                # Owners restored: every acknowledged order answers its owner's retry as
                # a duplicate with the same order id.
                rpc = f"ipc://{data}/h{n + 1}-rpc"
                for name in SCRIPTS:
                    c = RawClient(ctx, rpc)
                    made.append(c)
                    await c.hello(name)
                    for (owner, coid), oid in acked.items():
                        if owner != name:
                            continue
                        reply = await c.request(order(c, coid))
                        if isinstance(reply, OrderAccepted) and reply.duplicate \
                                and reply.order_id == oid:
                            retried_dup += 1
                    await c.close()
                fig.recoveries += 1
                acked_total += len(acked)
                journaled_total = len(rows)
            fig.duplicated = duplicates(sim)
            fig.notes.update(orders_sent=cycles * len(SCRIPTS) * per_script,
                             kill_delays_s=f"0..{max(delays):.2f}",
                             acknowledged=acked_total, journaled=journaled_total,
                             at_gateway=len(sim.broker.orders()),
                             retries_answered_duplicate=retried_dup,
                             contradicted=len(set(contradicted)))
            if contradicted:
                fig.notes["contradicted_examples"] = sorted(set(contradicted))[:3]
        finally:
            await kill(hub)
            for c in made:
                await c.close()
            ctx.destroy(linger=0)
            shutil.rmtree(data, ignore_errors=True)
    return fig


async def _down(r: Rig, how: str) -> asyncio.Task[None] | None:
    if how == "port closed":
        await r.sim.close_port()
        task = None
    else:  # 1100: the socket stays up, IB is unreachable behind the Gateway
        task = r.sim.spawn(r.sim.connectivity_lost("data_kept", after=30.0))
    up = r.hub.upstream
    assert up is not None
    await wait_until(lambda: up.state == UpstreamState.RECONNECTING, 5.0, "outage seen")
    return task


async def outage_orders(r: Rig, rounds: int, per_round: int = 10) -> Figures:
    """Orders sent while the upstream is down are refused (``upstream_down``), nothing
    reaches the Gateway; the same client order ids retried afterwards place each once."""
    fig = Figures("order requests during an upstream outage")
    await wire_orders(r.hub, order_rate=1000.0, order_burst=1000.0)
    c = r.client()
    await c.hello("trader")
    up = r.hub.upstream
    assert up is not None
    refused = accepted = 0
    for n in range(rounds):
        how = ("port closed", "1100 connectivity lost")[n % 2]
        fig.attempts += per_round
        outage = await _down(r, how)
        sent = r.sim.request_counts[PLACE_ORDER]
        coids = [f"o{n}-{i}" for i in range(per_round)]
        for coid in coids:
            reply = await c.request(place(c, coid, quantity=1.0))
            if isinstance(reply, OrderRejected) and reply.reason == RejectReason.UPSTREAM_DOWN:
                refused += 1
        if r.sim.request_counts[PLACE_ORDER] != sent:
            fig.duplicated += 1  # something reached the Gateway during the outage
        t0 = now()
        if outage is None:
            await r.sim.open_port()
        else:
            outage.cancel()  # connectivity_lost's finally sends 1102
        await wait_until(lambda: up.connected, 10.0, "reconnected")
        fig.recover_s.append(now() - t0)
        for coid in coids:  # the script retries with the same ids
            reply = await c.request(place(c, coid, quantity=1.0))
            accepted += isinstance(reply, OrderAccepted) and not reply.duplicate
        def at_gateway(coid: str) -> int:
            return sum(1 for o in r.sim.broker.orders()
                       if (parse_order_ref(o.order_ref) or ("", ""))[1] == coid)

        def all_placed(cs: list[str] = coids) -> bool:
            return all(at_gateway(x) >= 1 for x in cs)

        await wait_until(all_placed, 10.0,
                         "each retried order at the Gateway")  # twice: duplicates() below
        fig.recoveries += 1
    fig.duplicated += duplicates(r.sim)
    fig.notes.update(refused_upstream_down=refused, placed_on_retry=accepted)
    return fig


async def drop_mid_burst(r: Rig, burst: int = 60) -> Figures:
    """The Gateway restarts while a burst is queued in the hub's pacer: every order is
    either at the Gateway once or reported to its owner as not sent; none twice."""
    fig = Figures("Gateway drop with orders in flight", attempts=burst)
    await wire_orders(r.hub, order_rate=1000.0, order_burst=1000.0, pacer_rate=40.0)
    c = r.client()
    await c.hello("burst")
    events = r.listener("order.")
    await wait_until(lambda: True, 0.1)
    replies: dict[int, object] = {}
    reqs = [place(c, f"b-{i}", quantity=1.0) for i in range(burst)]
    for req in reqs:
        await c.send_raw(wire.encode(req))
    while len(replies) < burst:
        reply = await c.recv_reply(timeout=10)
        replies[reply.id] = reply
        if len(replies) == burst // 3:
            r.sim.spawn(r.sim.restart(0.3))
    up = r.hub.upstream
    assert up is not None
    t0 = now()
    await wait_until(lambda: up.connected and up.reconnect_count == 1, 10.0, "reconnected")
    fig.recover_s.append(now() - t0)
    svc = r.hub.orders
    acked = {x.order_id: x.client_order_id for x in replies.values()
             if isinstance(x, OrderAccepted)}

    def settled() -> bool:
        at = {o.order_id for o in r.sim.broker.orders()}
        told = {e.order_id for e in events.on("order." + c.handle)
                if isinstance(e, OrderEvent) and e.kind == "rejected"}
        return all(oid in at or oid in told for oid in acked)

    book = svc.book
    await wait_until(lambda: settled() and not book.queued and not any(svc.pacer.depth().values()),
                     20.0, "every acknowledged order placed or reported, pacer empty")
    await wait_until(lambda: not book.store.working, 10.0, "no order left working")
    at = {o.order_id for o in r.sim.broker.orders()}
    told = {e.order_id for e in events.on("order." + c.handle)
            if isinstance(e, OrderEvent) and e.kind == "rejected"}
    fig.lost = sum(1 for oid in acked if oid not in at and oid not in told)
    fig.duplicated = duplicates(r.sim)
    fig.recoveries = 1
    fig.notes.update(acknowledged=len(acked), refused=burst - len(acked),
                     at_gateway=len(at & set(acked)), reported_not_sent=len(told - at),
                     # told "rejected, not sent" yet at the Gateway: the owner was misled
                     contradicted=len(told & at))
    return fig


async def orders_through_restarts(r: Rig, cycles: int, rate: float = 100.0) -> Figures:
    """A script keeps placing orders (retrying ``upstream_down`` with the same id) while
    the Gateway restarts ``cycles`` times: orders land in every phase of a reconnect
    (journal write, pacer, reconciliation). Each acknowledged order must end at the
    Gateway once, or reported not sent and absent from it; never both."""
    fig = Figures("orders placed through Gateway restarts", notes={"orders_per_s": rate})
    svc = await wire_orders(r.hub, order_rate=1000.0, order_burst=1000.0)
    c = r.client()
    await c.hello("steady")
    up = r.hub.upstream
    assert up is not None
    acked: dict[str, int] = {}
    refused = 0
    stop = asyncio.Event()

    async def trade() -> None:
        nonlocal refused
        n = 0
        while not stop.is_set():
            coid = f"t-{n}"
            n += 1
            while not stop.is_set():
                reply = await c.request(place(c, coid, quantity=1.0))
                if isinstance(reply, OrderAccepted):
                    acked[coid] = reply.order_id
                    break
                refused += 1  # upstream_down: retry the same id after a pause
                await asyncio.sleep(0.02)
            await asyncio.sleep(1.0 / rate)

    trader = asyncio.create_task(trade())
    try:
        for n in range(1, cycles + 1):
            fig.attempts += 1
            def flowing(mark: int = len(acked)) -> bool:
                return len(acked) >= mark + 20

            await wait_until(flowing, 10.0, "orders flowing")
            t0 = now()
            await r.sim.restart(0.05)
            await wait_until(partial_reconnected(up, n), 10.0, "reconnected")
            await wait_until(svc.reconciled.is_set, 10.0, "reconciled")
            fig.recover_s.append(now() - t0)
            fig.recoveries += 1
    finally:
        stop.set()
        await trader
    book = svc.book
    assert book is not None
    await wait_until(lambda: not book.queued and not any(svc.pacer.depth().values()), 20.0,
                     "pacer empty")
    await wait_until(lambda: all(book.store.by_id[oid].status in ("Filled", "Inactive")
                                 for oid in acked.values()), 10.0, "orders settled")
    at = {o.order_id for o in r.sim.broker.orders()}
    inactive = {oid for oid in acked.values() if book.store.by_id[oid].status == "Inactive"}
    fig.lost = sum(1 for oid in acked.values() if oid not in at and oid not in inactive)
    fig.duplicated = duplicates(r.sim)
    fig.notes.update(acknowledged=len(acked), refused_upstream_down=refused,
                     at_gateway=len(at & set(acked.values())),
                     reported_not_sent=len(inactive - at),
                     contradicted=len(inactive & at))
    return fig


def partial_reconnected(up: object, n: int) -> Callable[[], bool]:
    def done() -> bool:
        return bool(getattr(up, "connected", False)) and getattr(up, "reconnect_count", 0) == n
    return done
