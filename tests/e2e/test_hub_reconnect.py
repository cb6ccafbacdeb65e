"""Upstream faults: the hub recovers and subscribers keep receiving without doing anything.

Every scenario uses the simulator's fault injection over real TCP and checks both
what the subscribers see (ticks flowing again on the same topic, sequence numbers
continuing) and what hub.status reported.
"""

from __future__ import annotations

import asyncio
from functools import partial

from ibhub import wire
from ibhub.hub.server import HubServer
from ibhub.protocol import (
    ContractDetailsReply,
    ContractSpec,
    GetContractDetails,
    GetSnapshot,
    GetStatus,
    HubStatus,
    Snapshot,
    StatusReply,
    UpstreamState,
)
from ibhub.sim import SimGateway, SimSubscription
from tests.e2e.conftest import Listener, RawClient, assert_consecutive, wait_until
from tests.helpers import upstream_of

REQ_MKT_DATA = 1


def mkt_subs(sim: SimGateway) -> list[SimSubscription]:
    return [s for s in sim.market_data_subscriptions() if s.kind == "mkt"]


async def two_subscribers(hub: HubServer, clients, listeners) -> tuple[Listener, Listener]:
    subs = []
    for name in ("one", "two"):
        c: RawClient = clients(hub.rpc_endpoint)
        lst = listeners(hub.pub_endpoint, "tick.AAPL", "hub.status")
        await c.hello(name)
        await c.subscribe("AAPL")
        subs.append(lst)
    a, b = subs
    await wait_until(lambda: len(a.on("tick.AAPL")) >= 3 and len(b.on("tick.AAPL")) >= 3,
                     5.0, "ticks before the fault")
    return a, b


async def ticks_resume(listener: Listener, after_seq: int, n: int = 5) -> None:
    await wait_until(lambda: sum(t.seq > after_seq for t in listener.on("tick.AAPL")) >= n,
                     10.0, f"{n} ticks after seq {after_seq}")


def kinds(listener: Listener) -> list[tuple[str, str, int]]:
    return [(e.kind, e.state, e.code) for e in listener.statuses()]


async def test_gateway_restart(hub: HubServer, hub_sim: SimGateway, clients,
                               listeners) -> None:
    a, b = await two_subscribers(hub, clients, listeners)
    before = a.on("tick.AAPL")[-1].seq
    await hub_sim.restart(0.3)
    await wait_until(lambda: upstream_of(hub).connected and upstream_of(hub).reconnect_count == 1,
                     10.0, "reconnected")
    await ticks_resume(a, before)
    await ticks_resume(b, before)
    assert len(mkt_subs(hub_sim)) == 1  # one line again, for both subscribers
    for lst in (a, b):
        assert_consecutive(lst.on("tick.AAPL"), "across the restart")  # seq continues
        states = lst.states()
        i = states.index(UpstreamState.RECONNECTING)
        assert UpstreamState.CONNECTED in states[i:], states
        assert ("resubscribed", UpstreamState.CONNECTED, 0) in kinds(lst)
        last = lst.statuses()[-1]
        assert last.reconnect_count == 1
    # The leases outlived the upstream outage: nobody had to say hello again.
    status = await clients(hub.rpc_endpoint).request(GetStatus(id=1))
    assert isinstance(status, StatusReply)
    assert sorted(le.name for le in status.leases) == ["one", "two"]
    assert status.reconnect_count == 1 and status.connected


async def test_1101_resubscribes(hub: HubServer, hub_sim: SimGateway, clients,
                                 listeners) -> None:
    a, b = await two_subscribers(hub, clients, listeners)
    requests_before = hub_sim.request_counts[REQ_MKT_DATA]
    before = a.on("tick.AAPL")[-1].seq
    await hub_sim.connectivity_lost("data_lost", after=0.2)
    await ticks_resume(a, before)
    await ticks_resume(b, before)
    assert hub_sim.request_counts[REQ_MKT_DATA] == requests_before + 1
    assert len(mkt_subs(hub_sim)) == 1
    k = kinds(a)
    assert ("ib", UpstreamState.CONNECTED, 1100) in k
    assert ("state", UpstreamState.RECONNECTING, 1100) in k
    assert ("state", UpstreamState.CONNECTED, 1101) in k
    assert ("resubscribed", UpstreamState.CONNECTED, 1101) in k
    assert k.index(("state", UpstreamState.RECONNECTING, 1100)) < k.index(
        ("state", UpstreamState.CONNECTED, 1101))
    assert_consecutive(a.on("tick.AAPL"), "across 1101")
    assert upstream_of(hub).reconnect_count == 0  # the socket never dropped


async def test_1102_does_not_resubscribe(hub: HubServer, hub_sim: SimGateway, clients,
                                         listeners) -> None:
    a, _ = await two_subscribers(hub, clients, listeners)
    requests_before = hub_sim.request_counts[REQ_MKT_DATA]
    before = a.on("tick.AAPL")[-1].seq
    await hub_sim.connectivity_lost("data_kept", after=0.2)
    await ticks_resume(a, before)
    assert hub_sim.request_counts[REQ_MKT_DATA] == requests_before
    k = kinds(a)
    assert ("state", UpstreamState.RECONNECTING, 1100) in k
    assert ("state", UpstreamState.CONNECTED, 1102) in k
    assert not [x for x in k if x[0] == "resubscribed"]


async def test_stalled_handshake_times_out_then_recovers(make_hub, hub_sim: SimGateway,
                                                         clients, listeners) -> None:
    hub = await make_hub(connect_timeout=0.3)
    lst = listeners(hub.pub_endpoint, "tick.AAPL", "hub.status")
    c = clients(hub.rpc_endpoint)
    await c.hello("patient")
    await c.subscribe("AAPL")
    await wait_until(lambda: lst.on("tick.AAPL"), 5.0, "first tick")
    hub_sim.stall_handshakes(True)
    await hub_sim.restart(0.05)
    await wait_until(
        lambda: sum(e.kind == "alert" and "timed out" in e.message for e in lst.statuses()) >= 2,
        10.0, "two timed-out connect attempts reported")
    assert upstream_of(hub).state == UpstreamState.RECONNECTING
    before = lst.on("tick.AAPL")[-1].seq
    hub_sim.stall_handshakes(False)
    await wait_until(lambda: upstream_of(hub).connected, 10.0, "recovery")
    await ticks_resume(lst, before)
    assert lst.states()[-1] == UpstreamState.CONNECTED


async def test_client_id_in_use_is_retried(make_hub, hub_sim: SimGateway, listeners) -> None:
    hub_sim.hold_client_id(0, 0.6)  # a half-open socket from a previous run holds id 0
    hub = await make_hub(wait_connected=False, connect_timeout=3.0)
    lst = listeners(hub.pub_endpoint, "hub.status")
    await wait_until(lambda: upstream_of(hub).connected, 10.0, "connected once the id is free")
    alerts = [e for e in lst.statuses() if e.kind == "alert"]
    # Failed fast on 326 rather than waiting out the 3 s connect timeout each time.
    assert alerts and all("326" in e.message for e in alerts), alerts
    assert any(e.kind == "ib" and e.code == 326 for e in lst.statuses())


async def test_farm_blip_reported(hub: HubServer, hub_sim: SimGateway, clients,
                                  listeners) -> None:
    a, _ = await two_subscribers(hub, clients, listeners)
    before = a.on("tick.AAPL")[-1].seq
    await hub_sim.farm_blip(0.2)
    await ticks_resume(a, before)
    codes = [e.code for e in a.statuses() if e.kind == "ib"]
    assert codes.index(2103) < len(codes) - 1 - codes[::-1].index(2104)
    assert upstream_of(hub).connected


async def test_data_freeze_reported_stale_then_fresh(make_hub, hub_sim: SimGateway, clients,
                                                     listeners) -> None:
    hub = await make_hub(stale_after=0.3)
    lst = listeners(hub.pub_endpoint, "hub.status", "tick.AAPL")
    c = clients(hub.rpc_endpoint)
    await c.hello("watcher")
    await c.subscribe("AAPL")
    await wait_until(lambda: lst.on("tick.AAPL"), 5.0, "first tick")
    hub_sim.spawn(hub_sim.freeze(1.0))
    await wait_until(lambda: any(e.kind == "stale" for e in lst.statuses()), 5.0, "stale")
    await wait_until(lambda: any(e.kind == "fresh" for e in lst.statuses()), 5.0, "fresh")
    assert upstream_of(hub).state == UpstreamState.CONNECTED


async def test_gives_up_after_max_attempts(make_hub, hub_sim: SimGateway, clients) -> None:
    await hub_sim.close_port()
    hub = await make_hub(wait_connected=False, reconnect_max_attempts=3,
                         reconnect_backoff_initial=0.02, reconnect_backoff_max=0.05)
    await wait_until(lambda: upstream_of(hub).state == UpstreamState.FAILED, 10.0, "FAILED")
    status = await clients(hub.rpc_endpoint).request(GetStatus(id=1))
    assert isinstance(status, StatusReply)
    assert status.state == UpstreamState.FAILED and not status.connected
    snap = await clients(hub.rpc_endpoint).request(GetSnapshot(id=2, topic="hub.status"))
    assert isinstance(snap, Snapshot)
    last = wire.decode_event(bytes(snap.events[0]))
    assert isinstance(last, HubStatus) and last.state == UpstreamState.FAILED
    assert "gave up after 3 attempts" in last.message


async def test_starts_before_gateway_is_up(make_hub, hub_sim: SimGateway, listeners) -> None:
    await hub_sim.close_port()
    hub = await make_hub(wait_connected=False)
    lst = listeners(hub.pub_endpoint, "hub.status")
    await wait_until(lambda: sum(e.kind == "alert" for e in lst.statuses()) >= 2, 5.0,
                     "refused attempts reported")
    assert upstream_of(hub).state == UpstreamState.CONNECTING
    await hub_sim.open_port()
    await wait_until(lambda: upstream_of(hub).connected, 5.0, "connected")
    assert upstream_of(hub).reconnect_count == 0


async def test_stop_while_a_handshake_hangs(make_hub, hub_sim: SimGateway) -> None:
    hub_sim.stall_handshakes(True)
    hub = await make_hub(wait_connected=False, connect_timeout=30.0)
    await wait_until(lambda: hub_sim.request_counts or upstream_of(hub).state == "CONNECTING",
                     5.0, "connect attempt under way")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await hub.stop()
    assert loop.time() - started < 2.0  # no waiting out the 30 s connect timeout
    assert hub.upstream is None


async def test_subscribe_during_1100_is_served_after_1102(hub: HubServer, hub_sim: SimGateway,
                                                           clients, listeners) -> None:
    c = clients(hub.rpc_endpoint)
    await c.hello("opportunist")
    lst = listeners(hub.pub_endpoint, "tick.MSFT", "hub.status")
    reply = await c.request(GetContractDetails(id=c.next_id(), contract=ContractSpec(
        symbol="MSFT")))
    assert isinstance(reply, ContractDetailsReply)  # now cached by the hub
    outage = hub_sim.spawn(hub_sim.connectivity_lost("data_kept", after=0.5))
    await wait_until(lambda: upstream_of(hub).state == UpstreamState.RECONNECTING, 5.0, "1100")
    sub = await c.subscribe("MSFT")  # accepted while IB is away
    assert sub.topic == "tick.MSFT"
    assert not [s for s in hub_sim.market_data_subscriptions() if s.symbol == "MSFT"]
    await outage
    await wait_until(lambda: lst.on("tick.MSFT"), 5.0, "MSFT ticks after 1102")
    assert [s.symbol for s in mkt_subs(hub_sim)] == ["MSFT"]


async def test_short_sessions_back_off(make_hub, hub_sim: SimGateway) -> None:
    # A Gateway that keeps dropping the hub right after it connects is not hammered:
    # each short session lengthens the pause before the next connect.
    hub = await make_hub(reconnect_backoff_initial=0.2, reconnect_backoff_max=0.8)
    loop = asyncio.get_running_loop()
    connected_at: list[float] = []

    class Clock:
        def on_connected(self, port: int, accounts: list[str]) -> None:
            connected_at.append(loop.time())

    hub.add_service(Clock())
    gaps = []
    for n in range(1, 4):
        dropped = loop.time()
        await hub_sim.restart(0.0)
        await wait_until(partial(lambda k: upstream_of(hub).reconnect_count == k
                                 and upstream_of(hub).connected, n),
                         10.0, f"reconnect {n}")
        gaps.append(connected_at[-1] - dropped)
    # Back-off 0.2, 0.4, 0.8 s with +-20% jitter.
    assert gaps[0] >= 0.15 and gaps[1] >= 0.3 and gaps[2] >= 0.6, gaps
