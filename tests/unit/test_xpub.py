"""The hub's XPUB: subscription bookkeeping (Interest), the publisher that skips topics
nobody wants, and the Fanout around them, on real ZeroMQ sockets (no hub, no loop)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import zmq

from ibhub import wire
from ibhub.hub.fanout import Fanout, TeePublisher
from ibhub.hub.xpub import XpubSubscriptions
from ibhub.protocol import TOPIC_BUNDLE, Bundle, ContractInfo, Event, Tick
from ibhub.wire import Interest, Publisher

WAIT = 3.0  # seconds any one condition may take


def info(con_id: int, symbol: str) -> ContractInfo:
    return ContractInfo(con_id=con_id, symbol=symbol, sec_type="STK", exchange="SMART",
                        primary_exchange="", currency="USD", local_symbol=symbol,
                        trading_class="", expiry="", strike=0.0, right="", multiplier="",
                        min_tick=0.01, long_name="")


def test_interest_prefixes_and_cached_verdicts() -> None:
    i = Interest()
    assert not i.wants(b"tick.AAPL") and i.verdicts == {b"tick.AAPL": False}
    assert i.subscribe(b"tick.A") and not i.subscribe(b"tick.A")
    assert i.verdicts == {}  # recomputed after a change, never scanned per publish
    assert i.wants(b"tick.AAPL") and i.wants(b"tick.A")
    assert not i.wants(b"tick.MSFT") and not i.wants(b"bar.AAPL")
    assert i.subscribe(b"")  # everything
    assert i.wants(b"tick.MSFT") and i.wants(b"hub.status")
    assert i.unsubscribe(b"") and not i.unsubscribe(b"")
    assert not i.wants(b"hub.status") and i.wants(b"tick.AAPL")
    i.clear()
    assert not i.wants(b"tick.AAPL")
    assert Interest.everything().wants(b"anything")


@dataclass
class Rig:
    ctx: zmq.Context[zmq.Socket[bytes]]
    xpub: zmq.Socket[bytes]
    endpoint: str
    subs: XpubSubscriptions
    fan: Fanout
    made: list[zmq.Socket[bytes]]

    def socket(self, kind: int) -> zmq.Socket[bytes]:
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        self.made.append(s)
        return s

    def sub(self, *prefixes: bytes) -> zmq.Socket[bytes]:
        s = self.socket(zmq.SUB)
        s.setsockopt(zmq.RCVTIMEO, int(WAIT * 1000))
        s.connect(self.endpoint)
        for p in prefixes:
            s.subscribe(p)
        return s

    def until(self, cond: object, what: str) -> None:
        """Read the XPUB (as the hub's loop would) until ``cond()`` holds."""
        deadline = time.monotonic() + WAIT
        while not cond():  # type: ignore[operator]
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.xpub.poll(20)
            self.subs.sync()


@pytest.fixture
def rig() -> Iterator[Rig]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    xpub = ctx.socket(zmq.XPUB)
    xpub.setsockopt(zmq.LINGER, 0)
    port = xpub.bind_to_random_port("tcp://127.0.0.1")
    subs = XpubSubscriptions(xpub)
    rig = Rig(ctx, xpub, f"tcp://127.0.0.1:{port}", subs, Fanout(xpub, subs), [xpub])
    yield rig
    for sock in rig.made:
        sock.close(0)
    ctx.term()


def recv_all(sock: zmq.Socket[bytes]) -> list[tuple[bytes, Event]]:
    out = []
    while sock.poll(100):
        topic, payload = sock.recv_multipart()
        out.append((topic, wire.decode_event(payload)))
    return out


def test_publishes_only_what_somebody_subscribes_to(rig: Rig) -> None:
    fan, pub = rig.fan, rig.fan.publisher
    aapl = fan.tick_stream("tick.AAPL", info(1, "AAPL"))
    msft = fan.tick_stream("tick.MSFT", info(2, "MSFT"))
    # Nobody subscribes: no send at all, but sequence numbers and last values move on
    # (snapshots and the front door read them).
    aapl.price(1, 10.0, 5.0)
    msft.price(1, 20.0, 5.0)
    fan.flush()
    assert pub.skipped == 2  # two topics; the bundle nobody wants is not even encoded
    assert fan.topic(TOPIC_BUNDLE).seq == 1
    aapl.price(2, 10.2, 6.0)  # a read with two ticks of one instrument
    aapl.price(2, 10.3, 6.0)
    fan.flush()
    assert pub.skipped == 3
    assert fan.topic("tick.AAPL").tick is not None  # kept, encoded only when asked
    names, seqs, events = fan.snapshot("tick.")
    assert names == ["tick.AAPL", "tick.MSFT"] and seqs == [3, 1]
    first = wire.decode_event(bytes(events[0]))
    assert isinstance(first, Tick) and (first.seq, first.bid, first.ask) == (3, 10.0, 10.3)
    assert fan.topic("tick.AAPL").tick is None  # encoded once, by the snapshot

    per_topic, bundled, everything = rig.sub(b"tick.AAPL"), rig.sub(b"bundle."), rig.sub(b"")
    rig.until(lambda: rig.subs.interest.prefixes == {b"tick.AAPL", b"bundle.", b""},
              "three subscriptions")
    assert rig.subs.subscribes == 3
    aapl.price(2, 10.5, 7.0)
    msft.price(2, 20.5, 7.0)
    fan.flush()
    fan.status("CONNECTED", "state", 0, "up", 0)
    got = recv_all(per_topic)
    assert [(t, e.seq) for t, e in got] == [(b"tick.AAPL", 4)]
    got = recv_all(bundled)
    assert len(got) == 1 and isinstance(got[0][1], Bundle)
    assert [name for name, _ in got[0][1].messages] == ["tick.AAPL", "tick.MSFT"]
    got = recv_all(everything)
    assert [t for t, _ in got] == [b"tick.AAPL", b"tick.MSFT", b"bundle.tick", b"hub.status"]
    skipped = pub.skipped

    # The last subscriber of "" and of bundle.* goes: tick.MSFT and the bundle stop.
    everything.close(0)
    bundled.unsubscribe(b"bundle.")
    rig.until(lambda: rig.subs.interest.prefixes == {b"tick.AAPL"}, "two unsubscriptions")
    assert rig.subs.unsubscribes == 2
    aapl.price(1, 10.1, 5.0)
    msft.price(1, 20.1, 5.0)
    fan.flush()
    assert pub.skipped == skipped + 1  # tick.MSFT; the bundle is not encoded, not counted
    assert [t for t, _ in recv_all(per_topic)] == [b"tick.AAPL"]
    assert recv_all(bundled) == []
    assert rig.subs.malformed == 0


def test_snapshot_applies_a_subscription_that_reached_the_socket(rig: Rig) -> None:
    """The Clone pattern: subscribe, then snapshot, then every later event arrives; the
    snapshot reads the XPUB first, whether or not the loop has read it yet."""
    fan = rig.fan
    aapl = fan.tick_stream("tick.AAPL", info(1, "AAPL"))
    aapl.price(1, 10.0, 5.0)
    fan.flush()
    late = rig.sub(b"tick.AAPL")
    assert rig.xpub.poll(int(WAIT * 1000))  # the subscription waits on the socket, unread
    assert rig.subs.interest.prefixes == set()
    names, seqs, _ = fan.snapshot("tick.AAPL")
    assert (names, seqs) == (["tick.AAPL"], [1])
    aapl.price(2, 10.5, 5.0)
    fan.flush()
    assert [e.seq for _, e in recv_all(late)] == [2]


def test_a_send_that_takes_the_edge_does_not_strand_a_subscription(rig: Rig) -> None:
    """A send processes the XPUB's commands: a subscription that arrived is moved into
    the socket and the FD's edge is gone, so the loop's reader would never be told.
    The fan-out reads it after every batch of sends (XpubSubscriptions.sync); here
    nothing else does (no loop, no snapshot)."""
    fan = rig.fan
    status = rig.sub(b"hub.")
    rig.until(lambda: rig.subs.interest.prefixes == {b"hub."}, "hub. subscription")
    late = rig.sub(b"tick.")
    aapl = fan.tick_stream("tick.AAPL", info(1, "AAPL"))
    deadline = time.monotonic() + WAIT
    while b"tick." not in rig.subs.interest.prefixes:
        assert time.monotonic() < deadline, "a send took the subscription's edge for good"
        fan.status("CONNECTED", "ib", 0, "a send", 0)  # sent: hub. is subscribed
        assert status.poll(int(WAIT * 1000))
        status.recv_multipart()
    aapl.price(1, 10.0, 5.0)
    fan.flush()
    assert [e.seq for _, e in recv_all(late)] == [1]


def test_malformed_messages_are_counted_and_ignored(rig: Rig) -> None:
    raw = rig.socket(zmq.XSUB)
    raw.connect(rig.endpoint)
    raw.send(b"\x05not a subscription")
    raw.send(b"")
    raw.send_multipart([b"\x01multi", b"part"])  # the XPUB splits it: "multi" + "part"
    raw.send(b"\x00never subscribed")  # an unsubscribe of nothing: ignored
    raw.send(b"\x01hub.")
    rig.until(lambda: b"hub." in rig.subs.interest.prefixes, "the XSUB's subscription")
    assert rig.subs.malformed == 3
    assert rig.subs.interest.prefixes == {b"multi", b"hub."}
    fan = rig.fan
    fan.status("CONNECTED", "state", 0, "up", 0)
    topic, payload = raw.recv_multipart()
    assert topic == b"hub.status" and wire.decode_event(payload).seq == 1
    raw.close(0)
    rig.until(lambda: not rig.subs.interest.prefixes, "the XSUB's unsubscriptions")


def test_tee_gets_every_message_whoever_subscribes(rig: Rig) -> None:
    """The NATS bridge mirrors everything: the tee is fed whether or not ZeroMQ sends."""
    woken: list[int] = []
    fan = rig.fan
    tee = fan.tee(lambda: woken.append(1))
    assert isinstance(tee, TeePublisher) and tee.interest is rig.subs.interest
    aapl = fan.tick_stream("tick.AAPL", info(1, "AAPL"))
    aapl.price(1, 10.0, 5.0)
    fan.flush()
    fan.status("CONNECTED", "state", 0, "up", 0)
    assert [t for t, _ in tee.take()] == [b"tick.AAPL", b"bundle.tick", b"hub.status"]
    assert tee.skipped == 3 and woken == [1]


def test_plain_pub_publisher_sends_everything() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        pub = ctx.socket(zmq.PUB)
        p = Publisher(pub)
        p.publish(b"tick.AAPL", b"x")  # PUB filters for itself
        assert p.skipped == 0 and p.wants(b"anything")
        pub.close(0)
    finally:
        ctx.term()
