"""The lane (ibhub.hub.lane, ibhub.client.lane) end to end: a HubServer on ipc with its
Unix-socket lane, the simulator over TCP, raw lane clients (asyncio streams speaking the
framing by hand) and the SDK. Real sockets throughout; the hub and the clients share the
test's loop, so a hub-side fault (a lane aborted mid-request) is deterministic.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from ibhub import wire
from ibhub.client import AsyncHub
from ibhub.hub import lane as hub_lane
from ibhub.protocol import (
    PROTOCOL_VERSION,
    Bundle,
    ContractSpec,
    Error,
    ErrorCode,
    Heartbeat,
    Hello,
    LaneAttach,
    LaneAttached,
    LaneTicket,
    LaneTicketIssued,
    Ok,
    OrderAccepted,
    OrderEvent,
    PlaceOrder,
    Reply,
    Request,
    Tick,
)
from tests.e2e.conftest import HubFactory, Listener, RawClient
from tests.e2e.test_orders_hub import wire_orders
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(60)


class RawLane:
    """A lane connection spoken by hand: frames out, frames in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.events: list[tuple[str, Any]] = []

    @classmethod
    async def open(cls, address: str) -> RawLane:
        assert address.startswith("unix://"), address
        reader, writer = await asyncio.open_unix_connection(address[len("unix://"):])
        return cls(reader, writer)

    def send(self, payload: bytes) -> None:
        self.writer.write(wire.lane_frame(payload))

    async def next_frame(self) -> Reply | None:
        """Read one frame: a reply (returned) or a pushed event (kept in ``events``)."""
        size = int.from_bytes(await self.reader.readexactly(4), "big")
        frame = await self.reader.readexactly(size)
        if frame[0] == wire.LANE_EVENT:
            n = frame[1]
            self.events.append((frame[2:2 + n].decode(), wire.decode_event(frame[2 + n:])))
            return None
        assert frame[0] == wire.LANE_REPLY
        return wire.decode_reply(frame[1:])

    async def reply(self, timeout: float = 5.0) -> Reply:
        """The next reply (pushed events are kept in ``events``)."""
        async with asyncio.timeout(timeout):
            while True:
                reply = await self.next_frame()
                if reply is not None:
                    return reply

    async def request(self, req: Request) -> Reply:
        self.send(wire.encode(req))
        return await self.reply()

    async def closed(self, timeout: float = 5.0) -> bool:
        async with asyncio.timeout(timeout):
            return await self.reader.read() == b""

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def lanes() -> AsyncIterator[Callable[[str], Any]]:
    made: list[RawLane] = []

    async def factory(address: str) -> RawLane:
        lane = await RawLane.open(address)
        made.append(lane)
        return lane

    yield factory
    for lane in made:
        lane.close()


async def ticket(client: RawClient) -> str:
    reply = await client.request(LaneTicket(id=client.next_id(), lease=client.lease))
    assert isinstance(reply, LaneTicketIssued), reply
    assert reply.expires_in == hub_lane.TICKET_TTL
    return reply.ticket


def place(coid: str, lease: str, rid: int = 1) -> PlaceOrder:
    return PlaceOrder(id=rid, lease=lease, client_order_id=coid,
                      contract=ContractSpec(symbol="AAPL"), action="BUY", quantity=5.0,
                      order_type="MKT")


async def test_attach_rules_bad_frames_and_floods_are_refused_and_counted(
    make_hub: HubFactory, clients: Callable[..., RawClient], lanes: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hub_lane, "ATTACH_TIMEOUT", 0.3)
    hub = await make_hub(lane_max_connections=4)
    assert hub.lane is not None
    path = Path(hub.settings.data_dir) / "lane.sock"
    assert hub.lane.address == f"unix://{path}"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # the hub's user only
    alice, bob = clients(hub.rpc_endpoint), clients(hub.rpc_endpoint)
    welcome = await alice.hello("lane-alice")
    assert welcome.lane == hub.lane.address
    await bob.hello("lane-bob")

    # a ticket with another lease's token: refused, and the ticket is spent
    t = await ticket(alice)
    lane = await lanes(hub.lane.address)
    reply = await lane.request(LaneAttach(id=7, ticket=t, lease=bob.lease))
    assert isinstance(reply, Error) and reply.id == 7 and reply.code == ErrorCode.FORBIDDEN
    assert "another lease" in reply.message
    assert await lane.closed()
    lane = await lanes(hub.lane.address)
    reply = await lane.request(LaneAttach(id=8, ticket=t, lease=alice.lease))
    assert isinstance(reply, Error) and "already used" in reply.message

    # an expired ticket
    t = await ticket(alice)
    real = hub.lane._clock
    hub.lane._clock = lambda: real() + hub_lane.TICKET_TTL + 1
    lane = await lanes(hub.lane.address)
    reply = await lane.request(LaneAttach(id=9, ticket=t, lease=alice.lease))
    hub.lane._clock = real
    assert isinstance(reply, Error) and "expired" in reply.message

    # a first frame that is not an attach, garbage, an oversize frame, silence
    lane = await lanes(hub.lane.address)
    reply = await lane.request(Heartbeat(id=3, lease=alice.lease))
    assert isinstance(reply, Error) and "lane_attach" in reply.message
    assert await lane.closed()
    lane = await lanes(hub.lane.address)
    lane.send(b"\xc1not msgpack")
    reply = await lane.reply()
    assert isinstance(reply, Error) and reply.code == ErrorCode.BAD_REQUEST
    lane = await lanes(hub.lane.address)
    lane.writer.write((hub.settings.max_request_bytes + 1).to_bytes(4, "big") + b"x")
    reply = await lane.reply()
    assert isinstance(reply, Error) and reply.code == ErrorCode.TOO_LARGE
    assert await lane.closed()
    lane = await lanes(hub.lane.address)
    reply = await lane.reply()  # says nothing: closed after ATTACH_TIMEOUT
    assert isinstance(reply, Error) and "no lane_attach" in reply.message
    assert await lane.closed()

    # attached: alice's token works there, bob's does not (not his connection), and a
    # bad request is answered without closing the lane
    lane = await lanes(hub.lane.address)
    reply = await lane.request(LaneAttach(id=1, ticket=await ticket(alice), lease=alice.lease))
    assert reply == LaneAttached(id=1, lease=alice.handle)
    assert await lane.request(Heartbeat(id=2, lease=alice.lease)) == Ok(id=2)
    reply = await lane.request(Heartbeat(id=3, lease=bob.lease))
    assert isinstance(reply, Error) and reply.code == ErrorCode.UNKNOWN_LEASE
    lane.send(b"\xc1")
    reply = await lane.reply()
    assert isinstance(reply, Error) and reply.code == ErrorCode.BAD_REQUEST
    assert await lane.request(Heartbeat(id=4, lease=alice.lease)) == Ok(id=4)
    reply = await lane.request(Hello(id=6, name="on-the-lane", protocol=PROTOCOL_VERSION))
    assert isinstance(reply, Error) and "say hello over the ZeroMQ" in reply.message

    # a flood: 4 connections at most (the attached one counts); more are refused
    flood = [await lanes(hub.lane.address) for _ in range(5)]
    refused = 0
    for extra in flood:
        try:
            reply = await extra.reply(timeout=2.0)
        except TimeoutError:
            continue
        if isinstance(reply, Error) and reply.code == ErrorCode.BUSY:
            refused += 1
    assert refused >= 2
    counters = hub.lane.counters
    assert counters["attach_refused"] == 5 and counters["bad_frames"] == 1
    assert counters["attach_timeouts"] >= 1 and counters["refused_full"] == refused
    metrics = hub.ops.metrics.render().decode()
    assert 'ibhub_lane_total{what="attach_refused"} 5.0' in metrics
    assert "ibhub_lane_connections " in metrics
    # the hub kept serving throughout, on both transports
    assert await lane.request(Heartbeat(id=5, lease=alice.lease)) == Ok(id=5)
    assert await alice.request(Heartbeat(id=alice.next_id(), lease=alice.lease)) \
        == Ok(id=alice.next_id() - 1)


async def test_raw_order_over_the_lane_with_its_events_pushed(
    make_hub: HubFactory, clients: Callable[..., RawClient], lanes: Any,
) -> None:
    hub = await make_hub()
    svc = await wire_orders(hub)
    await wait_until(svc.reconciled.is_set, 5.0, "orders reconciled")
    assert hub.lane is not None
    alice = clients(hub.rpc_endpoint)
    await alice.hello("lane-raw")
    lane = await lanes(hub.lane.address)
    assert isinstance(await lane.request(
        LaneAttach(id=1, ticket=await ticket(alice), lease=alice.lease)), LaneAttached)
    accepted = await lane.request(place("lane-raw-1", alice.lease, rid=2))
    assert isinstance(accepted, OrderAccepted), accepted
    async with asyncio.timeout(5.0):
        while not any(getattr(e, "kind", "") == "commission" for _, e in lane.events):
            await lane.next_frame()
    topics = {t for t, _ in lane.events}
    assert topics == {f"order.{alice.handle}"}
    seqs = [e.seq for _, e in lane.events]
    assert seqs == list(range(1, len(seqs) + 1))
    assert all(isinstance(e, OrderEvent) and e.order_id == accepted.order_id
               for _, e in lane.events)


async def test_sdk_orders_over_the_lane_fall_back_when_it_breaks_and_reattach(
    make_hub: HubFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub = await make_hub()
    svc = await wire_orders(hub)
    await wait_until(svc.reconciled.is_set, 5.0, "orders reconciled")
    assert hub.lane is not None
    async with AsyncHub(pub=hub.pub_endpoint, rpc=hub.rpc_endpoint, name="lane-sdk",
                        request_timeout=5.0) as sdk, \
            AsyncHub(pub=hub.pub_endpoint, rpc=hub.rpc_endpoint, name="zmq-sdk",
                     request_timeout=5.0, lane=False) as plain:
        assert sdk.lane_attached and not plain.lane_attached
        first = await sdk.place_order("AAPL", "BUY", 10)
        await first.wait_until(lambda o: o.status == "Filled" and o.commission > 0, 5.0)
        assert [e.seq for e in first.events] == list(range(1, len(first.events) + 1))
        assert sdk.stats["lane_requests"] >= 1
        # each event delivered once; the second copies (SUB's or the lane's, whichever
        # came later) are counted, never delivered again
        await wait_until(lambda: sdk.stats["duplicates"] == len(first.events), 5.0,
                         "every second copy")
        assert sdk.stats["gaps"] == 0
        other = await plain.place_order("AAPL", "BUY", 1)
        await other.wait_until(lambda o: o.status == "Filled", 5.0)

        # the lane dies with requests in flight: the hub aborts the connection instead
        # of serving them; they are sent again over ZeroMQ, nothing is lost
        lane = hub.lane
        served = lane.serve

        def abort(payload: bytes, peer: Any, send: Any) -> None:
            for conn in list(lane.connections):
                if conn.transport is not None:
                    conn.transport.abort()

        monkeypatch.setattr(lane, "serve", abort)
        orders = await asyncio.gather(*(sdk.place_order("AAPL", "BUY", 1) for _ in range(3)))
        assert len({o.order_id for o in orders}) == 3
        assert sdk.stats["lane_fallbacks"] >= 1 and not sdk.lane_attached
        for order in orders:
            await order.wait_until(lambda o: o.status == "Filled", 5.0)
            assert [e.seq for e in order.events] == sorted({e.seq for e in order.events})
        coids = [o.client_order_id for o in orders]
        book = [r for r in svc.book.store.by_id.values() if r.client_order_id in coids]
        assert len(book) == 3  # each placed once, though sent twice

        monkeypatch.setattr(lane, "serve", served)
        await wait_until(lambda: sdk.lane_attached, 5.0, "lane re-attached")
        before = sdk.stats["lane_requests"]
        last = await sdk.place_order("AAPL", "SELL", 13)
        await last.wait_until(lambda o: o.status == "Filled", 5.0)
        assert sdk.stats["lane_requests"] > before
        assert sdk.stats["gaps"] == 0


async def test_lane_off_and_tcp_lane(make_hub: HubFactory) -> None:
    off = await make_hub(lane="off")
    assert off.lane is None
    tcp = await make_hub(lane="tcp://127.0.0.1:0", client_id=1)
    assert tcp.lane is not None and tcp.lane.address.startswith("tcp://127.0.0.1:")
    async with AsyncHub(pub=off.pub_endpoint, rpc=off.rpc_endpoint, name="lane-off") as a, \
            AsyncHub(pub=tcp.pub_endpoint, rpc=tcp.rpc_endpoint, name="lane-tcp") as b:
        assert not a.lane_attached and b.lane_attached
        assert (await a.status()).connected and (await b.status()).connected
        assert b.stats["lane_requests"] >= 1 and a.stats["lane_requests"] == 0
    await tcp.stop()
    await off.stop()


async def test_a_lane_that_is_not_read_loses_pushed_events_never_the_sub_copy(
    make_hub: HubFactory, clients: Callable[..., RawClient], lanes: Any, zctx: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hub_lane, "PUSH_LIMIT", 4096)
    hub = await make_hub()
    assert hub.lane is not None and hub.fanout is not None
    alice = clients(hub.rpc_endpoint)
    await alice.hello("lane-slow")
    topic = f"error.{alice.handle}"
    listener = Listener(zctx, hub.pub_endpoint, topic)
    try:
        lane = await lanes(hub.lane.address)
        assert isinstance(await lane.request(
            LaneAttach(id=1, ticket=await ticket(alice), lease=alice.lease)), LaneAttached)
        # the SUB socket must be connected before the burst (no slow-joiner loss)
        hub.fanout.error(alice.handle, 0, "probe", "", "")
        await wait_until(lambda: len(listener.on(topic)) == 1, 5.0, "SUB connected")
        n = 3000  # ~0.5 MB: more than the socket buffers while nobody reads the lane
        for i in range(n):
            hub.fanout.error(alice.handle, 200, "x" * 100 + str(i), "", "")
        assert hub.lane.counters["events_dropped"] > 0  # said so (logged and counted)
        await wait_until(lambda: len(listener.on(topic)) == n + 1, 10.0, "every SUB copy")
        assert [e.seq for e in listener.on(topic)] == list(range(1, n + 2))
        # the hub answers at once on both transports; the lane then delivers what it kept
        assert await alice.request(Heartbeat(id=alice.next_id(), lease=alice.lease)) \
            == Ok(id=alice.next_id() - 1)
        assert await lane.request(Heartbeat(id=9, lease=alice.lease)) == Ok(id=9)
        seqs = [e.seq for _, e in lane.events]
        assert seqs == sorted(seqs) and len(seqs) < n + 1
    finally:
        await listener.close()


async def test_the_sdk_attaches_again_to_a_restarted_hub(
    make_hub: HubFactory, ipc_dir: str
) -> None:
    endpoints = {"pub": f"ipc://{ipc_dir}/pub-l", "rpc": f"ipc://{ipc_dir}/rpc-l"}
    first = await make_hub(**endpoints)
    async with AsyncHub(endpoints["pub"], endpoints["rpc"], name="lane-restart",
                        request_timeout=2.0) as sdk:
        assert sdk.lane_attached
        lease = sdk.lease
        await first.stop()
        await wait_until(lambda: not sdk.lane_attached, 5.0, "the lane seen closed")
        second = await make_hub(**endpoints)  # a new hub on the same endpoints and data dir
        assert second.lane is not None
        await wait_until(lambda: sdk.rehellos == 1, 10, "re-hello to the new hub")
        assert sdk.lease != lease
        await wait_until(lambda: sdk.lane_attached and sdk.lane_ticks_attached, 10,
                         "the lane and its tick connection attached to the new hub")
        before = sdk.stats["lane_requests"]
        assert (await sdk.status()).connected
        assert sdk.stats["lane_requests"] == before + 1
        assert second.lane.counters["attached"] == 2  # requests, and ticks
        assert second.lane.counters["tick_attached"] == 1


async def test_sdk_ticks_over_the_lane_fall_back_to_sub_and_come_back(
    make_hub: HubFactory
) -> None:
    hub = await make_hub()
    assert hub.lane is not None
    got: list[Tick] = []
    async with AsyncHub(hub.pub_endpoint, hub.rpc_endpoint, name="lane-ticks",
                        request_timeout=5.0) as sdk, \
            AsyncHub(hub.pub_endpoint, hub.rpc_endpoint, name="sub-ticks",
                     request_timeout=5.0, lane_ticks=False) as via_sub:
        # the default: the bundle over a tick connection of its own; lane_ticks=False: SUB
        assert sdk.lane_ticks_attached and sdk.lane_attached
        assert via_sub.lane_attached and not via_sub.lane_ticks_attached
        assert hub.lane.stats()["tick_connections"] == 1
        sub = await sdk.subscribe("AAPL", callback=got.append)
        other = await via_sub.subscribe("AAPL")
        await wait_until(lambda: len(got) >= 10 and other.received >= 10, 10, "ticks")
        assert sdk.stats["lane_tick_events"] > 0 and via_sub.stats["lane_tick_events"] == 0
        # The tick connection breaks: ticks go on over SUB, then over a new connection.
        tick_conn = hub.lane.tick_connections[0]
        assert tick_conn.transport is not None and tick_conn not in hub.lane.by_lease.get(
            sdk.lease or "", [])  # no order or error events pushed on it
        tick_conn.transport.abort()
        await wait_until(lambda: not sdk.lane_ticks_attached, 5, "the break seen")
        over_sub = sdk.stats["events"] - sdk.stats["lane_tick_events"]
        await wait_until(lambda: sdk.stats["events"] - sdk.stats["lane_tick_events"]
                         > over_sub, 10, "ticks over the SUB socket")  # re-attach: 0.5 s
        await wait_until(lambda: sdk.lane_ticks_attached, 10, "the tick connection again")
        lane_ticks = sdk.stats["lane_tick_events"]
        await wait_until(lambda: sdk.stats["lane_tick_events"] > lane_ticks + 5, 10,
                         "ticks over the lane again")
        seqs = [t.seq for t in got]
        assert seqs == sorted(set(seqs))  # in order, no copies, whichever route
        assert sdk.lane_attached and hub.lane.counters["tick_attached"] == 2
        assert sub.gaps <= 2  # each switch may cost a snapshot recovery, never a loss


async def test_tick_connections_get_bundles_only_and_a_slow_one_loses_whole_bundles(
    make_hub: HubFactory, clients: Callable[..., RawClient], lanes: Callable[[str], Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub = await make_hub()
    assert hub.lane is not None and hub.fanout is not None
    alice = clients(hub.rpc_endpoint)
    await alice.hello("lane-ticks-raw")
    reader, stuck = await lanes(hub.lane.address), await lanes(hub.lane.address)
    for lane in (reader, stuck):
        assert isinstance(await lane.request(LaneAttach(
            id=1, ticket=await ticket(alice), lease=alice.lease, ticks=True)), LaneAttached)
    await alice.subscribe("AAPL")
    hub.fanout.error(alice.handle, 200, "for the lease's request lane only", "", "")

    def aapl_seen() -> bool:
        return any(name == "tick.AAPL" for _, bundle in reader.events
                   for name, _ in bundle.messages)

    async with asyncio.timeout(10):
        while not aapl_seen():
            assert await reader.next_frame() is None  # pushed bundles only, no reply
    assert {topic for topic, _ in reader.events} == {"bundle.tick"}
    assert all(isinstance(bundle, Bundle) for _, bundle in reader.events)
    # A reader that stops reading loses whole bundles past the limit; the hub goes on.
    monkeypatch.setattr(hub_lane, "TICK_PUSH_LIMIT", 1 << 16)
    for _ in range(300):  # ~1.2 MB: more than the socket buffers hold
        hub.fanout.bundle_sink(b"\x00" * 4096)  # type: ignore[misc]
    assert hub.lane.counters["bundles_dropped"] > 0
    assert stuck.writer.transport is not None and not stuck.writer.is_closing()
    assert await alice.request(Heartbeat(id=alice.next_id(), lease=alice.lease)) \
        == Ok(id=alice.next_id() - 1)
    # the last tick connection gone, the fan-out stops handing bundles to the lane
    reader.close()
    stuck.close()
    await wait_until(lambda: hub.fanout is not None and hub.fanout.bundle_sink is None, 5,
                     "the bundle sink removed")
