"""Leases, ref-counted subscriptions and fan-out, end to end (sim over TCP, hub over ZeroMQ)."""

from __future__ import annotations

import math

import msgspec
import zmq

from ibhub import wire
from ibhub.hub.server import HubServer
from ibhub.protocol import (
    Bar,
    ContractSpec,
    Error,
    ErrorCode,
    ErrorEvent,
    GetSnapshot,
    GetStatus,
    Goodbye,
    Heartbeat,
    Ok,
    Snapshot,
    StatusReply,
    Subscribe,
    Subscribed,
    Tick,
    Unsubscribe,
)
from ibhub.sim import SimConfig, SimGateway, SimSubscription
from tests.e2e.conftest import assert_consecutive, wait_until


def mkt_subs(sim: SimGateway, con_id: int | None = None) -> list[SimSubscription]:
    return [s for s in sim.market_data_subscriptions()
            if s.kind == "mkt" and (con_id is None or s.con_id == con_id)]


async def test_two_leases_share_one_upstream_line(hub: HubServer, hub_sim: SimGateway,
                                                  clients, listeners) -> None:
    a, b = clients(hub.rpc_endpoint), clients(hub.rpc_endpoint)
    la, lb = listeners(hub.pub_endpoint, "tick.AAPL"), listeners(hub.pub_endpoint, "tick.AAPL")
    wa, wb = await a.hello("alpha"), await b.hello("beta")
    assert wa.client_id != wb.client_id
    assert 0 not in (wa.client_id, wb.client_id)  # never the hub's own id

    sa = await a.subscribe("AAPL")
    sb = await b.subscribe("AAPL")
    assert sa.topic == sb.topic == "tick.AAPL"
    assert (sa.subscribers, sb.subscribers) == (1, 2)
    assert sa.contract.con_id == sb.contract.con_id
    con_id = sa.contract.con_id
    assert len(mkt_subs(hub_sim)) == 1
    assert mkt_subs(hub_sim)[0].con_id == con_id

    await wait_until(lambda: len(la.on("tick.AAPL")) >= 20 and len(lb.on("tick.AAPL")) >= 20,
                     10.0, "20 ticks on both listeners")
    ta, tb = la.on("tick.AAPL"), lb.on("tick.AAPL")
    assert all(isinstance(t, Tick) and t.con_id == con_id and t.symbol == "AAPL" for t in ta)
    assert_consecutive(ta, "listener a")
    assert_consecutive(tb, "listener b")
    # Same events: compare on the sequence numbers both have seen.
    by_seq_a = {t.seq: t for t in ta}
    common = [t for t in tb if t.seq in by_seq_a]
    assert len(common) >= 10
    for t in common:
        assert msgspec.msgpack.encode(t) == msgspec.msgpack.encode(by_seq_a[t.seq])
    assert all(t.ts > 0 for t in ta)
    assert any(not math.isnan(t.bid) for t in ta) and any(not math.isnan(t.ask) for t in ta)

    # One leaves: the upstream line stays. Both leave: it is cancelled.
    r = await a.request(Unsubscribe(id=a.next_id(), lease=a.lease, topic="tick.AAPL"))
    assert isinstance(r, Ok), r
    assert len(mkt_subs(hub_sim)) == 1
    n = len(lb.on("tick.AAPL"))
    await wait_until(lambda: len(lb.on("tick.AAPL")) > n + 5, 5.0, "ticks after one left")
    r = await a.request(Unsubscribe(id=a.next_id(), lease=a.lease, topic="tick.AAPL"))
    assert isinstance(r, Error) and r.code == ErrorCode.NOT_SUBSCRIBED, r
    r = await b.request(Unsubscribe(id=b.next_id(), lease=b.lease, topic="tick.AAPL"))
    assert isinstance(r, Ok), r
    await wait_until(lambda: not mkt_subs(hub_sim), 5.0, "upstream cancel")
    status = await a.request(GetStatus(id=a.next_id()))
    assert isinstance(status, StatusReply)
    assert status.lines_used == 0 and status.subscriptions == []


async def test_expired_lease_releases_its_subscriptions(hub: HubServer, hub_sim: SimGateway,
                                                        clients) -> None:
    keeper, quitter = clients(hub.rpc_endpoint), clients(hub.rpc_endpoint)
    await keeper.hello("keeper")
    await quitter.hello("quitter")
    await keeper.subscribe("MSFT")
    await quitter.subscribe("MSFT")
    await quitter.subscribe("AAPL")
    assert len(mkt_subs(hub_sim)) == 2

    await quitter.stop_heartbeat()  # the script hangs: no goodbye, no heartbeats
    await wait_until(lambda: hub.leases.get(quitter.handle) is None, 3.0, "lease expiry")
    await wait_until(lambda: len(mkt_subs(hub_sim)) == 1, 3.0, "AAPL cancelled upstream")
    assert mkt_subs(hub_sim)[0].symbol == "MSFT"  # still held by keeper
    status = await keeper.request(GetStatus(id=keeper.next_id()))
    assert isinstance(status, StatusReply)
    assert [(s.topic, s.subscribers) for s in status.subscriptions] == [("tick.MSFT", 1)]
    assert [lease.name for lease in status.leases] == ["keeper"]

    r = await quitter.request(Heartbeat(id=quitter.next_id(), lease=quitter.lease))
    assert isinstance(r, Error) and r.code == ErrorCode.UNKNOWN_LEASE, r
    r = await quitter.request(Subscribe(id=quitter.next_id(), lease=quitter.lease,
                                        contract=ContractSpec(symbol="AAPL")))
    assert isinstance(r, Error) and r.code == ErrorCode.UNKNOWN_LEASE, r


async def test_goodbye_releases_and_frees_client_id(hub: HubServer, hub_sim: SimGateway,
                                                    clients) -> None:
    c = clients(hub.rpc_endpoint)
    w = await c.hello("leaver")
    await c.subscribe("AAPL")
    r = await c.request(Goodbye(id=c.next_id(), lease=c.lease))
    assert isinstance(r, Ok), r
    await wait_until(lambda: not mkt_subs(hub_sim), 3.0, "upstream cancel after goodbye")
    assert w.client_id not in hub.leases.ids_in_use()
    r = await c.request(Goodbye(id=c.next_id(), lease=c.lease))
    assert isinstance(r, Error) and r.code == ErrorCode.UNKNOWN_LEASE


async def test_late_joiner_gets_snapshot_then_continues(hub: HubServer, clients,
                                                        listeners) -> None:
    early = clients(hub.rpc_endpoint)
    await early.hello("early")
    await early.subscribe("AAPL")
    first = listeners(hub.pub_endpoint, "tick.AAPL")
    await wait_until(lambda: len(first.on("tick.AAPL")) >= 3, 5.0, "ticks")

    late = clients(hub.rpc_endpoint)
    await late.hello("late")
    lst = listeners(hub.pub_endpoint, "tick.AAPL")
    sub = await late.subscribe("AAPL")
    assert sub.subscribers == 2
    await wait_until(lambda: lst.on("tick.AAPL"), 5.0, "late listener joined")
    snap = await late.request(GetSnapshot(id=late.next_id(), topic="tick.AAPL"))
    assert isinstance(snap, Snapshot), snap
    assert snap.topics == ["tick.AAPL"]
    last = wire.decode_event(bytes(snap.events[0]))
    assert isinstance(last, Tick) and last.seq == snap.seqs[0] >= 3
    # The stream continues from the snapshot's sequence number without a gap.
    await wait_until(lambda: any(t.seq > last.seq for t in lst.on("tick.AAPL")), 5.0,
                     "a tick after the snapshot")
    assert any(t.seq == last.seq + 1 for t in lst.on("tick.AAPL"))
    assert_consecutive(lst.on("tick.AAPL"), "late listener")

    # Prefix snapshots cover every topic under it; hub.status is always there.
    snap = await late.request(GetSnapshot(id=late.next_id(), topic=""))
    assert isinstance(snap, Snapshot)
    assert "hub.status" in snap.topics and "tick.AAPL" in snap.topics
    snap = await late.request(GetSnapshot(id=late.next_id(), topic="tick.NOPE"))
    assert isinstance(snap, Snapshot) and snap.topics == [] and snap.events == []


async def test_line_limit(make_hub, hub_sim: SimGateway, clients) -> None:
    hub = await make_hub(lines_max=2)
    c = clients(hub.rpc_endpoint)
    await c.hello("greedy")
    await c.subscribe("AAPL")
    await c.subscribe("MSFT")
    r = await c.request(Subscribe(id=c.next_id(), lease=c.lease,
                                  contract=ContractSpec(symbol="IBM")))
    assert isinstance(r, Error) and r.code == ErrorCode.LINE_LIMIT, r
    assert "2 of 2" in r.message
    # Another subscriber to a held line does not need a new line.
    other = clients(hub.rpc_endpoint)
    await other.hello("other")
    assert (await other.subscribe("AAPL")).subscribers == 2
    status = await c.request(GetStatus(id=c.next_id()))
    assert isinstance(status, StatusReply)
    assert (status.lines_used, status.lines_max) == (2, 2)
    assert len(mkt_subs(hub_sim)) == 2
    # Freeing a line makes room.
    await c.request(Unsubscribe(id=c.next_id(), lease=c.lease, topic="tick.MSFT"))
    assert (await c.subscribe("IBM")).topic == "tick.IBM"


async def test_req_socket_and_status_fields(hub: HubServer, hub_sim: SimGateway,
                                            clients) -> None:
    req = clients(hub.rpc_endpoint, zmq.REQ)
    w = await req.hello("req-client")  # a REQ socket: no background heartbeats
    s = await req.request(Subscribe(id=req.next_id(), lease=w.token,
                                    contract=ContractSpec(symbol="EUR", sec_type="CASH",
                                                          exchange="IDEALPRO")))
    assert s.topic == "tick.EURUSD", s
    status = await req.request(GetStatus(id=41))
    assert isinstance(status, StatusReply) and status.id == 41
    assert status.connected and status.state == "CONNECTED"
    assert (status.host, status.port, status.client_id) == ("127.0.0.1", hub_sim.port, 0)
    assert status.server_version == 176
    assert status.accounts == list(hub_sim.config.accounts)
    assert status.uptime_seconds > 0 and status.connected_at is not None
    assert status.reconnect_count == 0
    assert [lease.name for lease in status.leases] == ["req-client"]
    assert status.leases[0].subscriptions == 1
    assert status.subscriptions[0].topic == "tick.EURUSD"
    assert status.lines_used == 1 and status.lines_max == 100
    await wait_until(lambda: hub.subs.all()[0].stream.ticks > 0, 5.0, "EURUSD ticks")
    status = await req.request(GetStatus(id=42))
    assert isinstance(status, StatusReply)
    assert status.last_tick_at is not None and status.subscriptions[0].ticks > 0
    assert 0 in hub_sim.connected_client_ids()


async def test_ib_error_for_a_line_goes_to_its_leases(make_hub, clients, listeners) -> None:
    # A Gateway with fewer lines than the hub thinks it has: IB refuses the second line
    # with error 101, and that error goes to error.<lease> of the line's subscriber only.
    async with SimGateway(SimConfig(host="127.0.0.1", port=0, seed=3, max_lines=1)) as small:
        hub = await make_hub(gateway_port=small.port)
        a, b = clients(hub.rpc_endpoint), clients(hub.rpc_endpoint)
        await a.hello("a")
        await b.hello("b")
        everything = listeners(hub.pub_endpoint, "error.", "hub.status", "tick.AAPL")
        await b.subscribe("AAPL")
        # a tick of the first line shows the SUB socket connected (no slow-joiner loss)
        await wait_until(lambda: everything.on("tick.AAPL"), 5.0, "first line's ticks")
        await a.subscribe("MSFT")
        await wait_until(lambda: everything.on(f"error.{a.handle}"), 5.0, "error event for a")
        err = everything.on(f"error.{a.handle}")[0]
        assert isinstance(err, ErrorEvent)
        assert (err.lease, err.ib_code, err.topic, err.seq) == (a.handle, 101, "tick.MSFT", 1)
        assert err.message and err.explanation
        assert not everything.on(f"error.{b.handle}")
        assert not any(e.code == 101 for e in everything.statuses())  # not everyone's business


async def test_realtime_bars(hub: HubServer, hub_sim: SimGateway, clients, listeners) -> None:
    c = clients(hub.rpc_endpoint)
    await c.hello("bars")
    lst = listeners(hub.pub_endpoint, "bar.AAPL")
    r = await c.request(Subscribe(id=c.next_id(), lease=c.lease,
                                  contract=ContractSpec(symbol="AAPL"), kind="bars"))
    assert isinstance(r, Subscribed) and r.topic == "bar.AAPL", r
    assert [s.kind for s in hub_sim.market_data_subscriptions()] == ["rtbars"]
    await wait_until(lambda: lst.on("bar.AAPL"), hub_sim.config.rt_bar_seconds + 5.0,
                     "one real-time bar")
    bar = lst.on("bar.AAPL")[0]
    assert isinstance(bar, Bar) and bar.seq == 1 and bar.symbol == "AAPL"
    assert bar.low <= bar.open <= bar.high and bar.time > 1_500_000_000
    r = await c.request(Unsubscribe(id=c.next_id(), lease=c.lease, topic="bar.AAPL"))
    assert isinstance(r, Ok)
    await wait_until(lambda: not hub_sim.market_data_subscriptions(), 5.0, "bars cancelled")


async def test_delayed_market_data_type(make_hub, hub_sim: SimGateway, clients,
                                        listeners) -> None:
    hub = await make_hub(market_data_type=3)
    assert hub_sim.request_counts[59] == 1  # reqMarketDataType, once per session
    c = clients(hub.rpc_endpoint)
    await c.hello("delayed")
    lst = listeners(hub.pub_endpoint, "tick.AAPL")
    await c.subscribe("AAPL")
    await wait_until(lambda: any(not math.isnan(t.bid) for t in lst.on("tick.AAPL")), 5.0,
                     "delayed ticks with a bid")
