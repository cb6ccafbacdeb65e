"""Fanout: topic naming, per-topic seq, last-value cache, one event per upstream tick."""

from __future__ import annotations

import math
from collections.abc import Iterator

import msgspec
import pytest
import zmq

from ibhub import wire
from ibhub.hub.fanout import Fanout
from ibhub.protocol import (
    TOPIC_BUNDLE,
    Bar,
    Bundle,
    ContractInfo,
    ErrorEvent,
    Event,
    HubStatus,
    Tick,
    Ticks,
)


def info(con_id: int, symbol: str, sec_type: str = "STK", currency: str = "USD") -> ContractInfo:
    return ContractInfo(con_id=con_id, symbol=symbol, sec_type=sec_type, exchange="SMART",
                        primary_exchange="", currency=currency, local_symbol=symbol,
                        trading_class="", expiry="", strike=0.0, right="", multiplier="",
                        min_tick=0.01, long_name="")


@pytest.fixture
def pubsub() -> Iterator[tuple[Fanout, zmq.Socket[bytes]]]:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVTIMEO, 2000)
    sub.connect(f"tcp://127.0.0.1:{port}")
    # Per-topic messages only (not bundle.tick); the probe goes last, so once it
    # arrives every subscription before it has reached the publisher too.
    for prefix in (b"tick.", b"bar.", b"hub.", b"error.", b"probe"):
        sub.subscribe(prefix)
    fan = Fanout(pub)
    # Wait until the subscription has reached the publisher (no sleeps: poll a probe topic).
    probe = fan.topic("probe")
    while True:
        fan.publisher.publish(probe.key, b"x")
        if sub.poll(20):
            sub.recv_multipart()
            break
    while sub.poll(50):
        sub.recv_multipart()
    yield fan, sub
    sub.close(0)
    pub.close(0)
    ctx.term()


def recv(sub: zmq.Socket[bytes]) -> tuple[str, Event]:
    topic, payload = sub.recv_multipart()
    return topic.decode(), wire.decode_event(payload)


def recv_ticks(sub: zmq.Socket[bytes]) -> list[Tick]:
    """One message's ticks (a Tick or a Ticks batch)."""
    _topic, event = recv(sub)
    ticks = list(wire.unbatch(event))
    assert all(isinstance(t, Tick) for t in ticks)
    return ticks  # type: ignore[return-value]


def test_topic_names() -> None:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    try:
        fan = Fanout(pub)
        assert fan.topic_for(info(1, "AAPL"), "ticks") == "tick.AAPL"
        assert fan.topic_for(info(1, "AAPL"), "bars") == "bar.AAPL"
        assert fan.topic_for(info(2, "EUR", "CASH", "USD"), "ticks") == "tick.EURUSD"
        assert fan.topic_for(info(3, "ES", "FUT"), "ticks") == "tick.3"
        assert fan.topic_for(info(4, "SPY", "OPT"), "bars") == "bar.4"
        # Same symbol, different conId (e.g. another listing): the conId form.
        assert fan.topic_for(info(9, "AAPL"), "ticks") == "tick.9"
        assert fan.topic_for(info(1, "AAPL"), "ticks") == "tick.AAPL"  # owner keeps its name
    finally:
        pub.close(0)
        ctx.term()


def test_one_read_of_ticks_is_one_batch_with_consecutive_seq(pubsub) -> None:
    fan, sub = pubsub
    stream = fan.tick_stream("tick.AAPL", info(265598, "AAPL"))
    stream.price(1, 190.0, 100.0)  # bid + size
    stream.price(2, 190.02, 200.0)  # ask + size
    stream.price(4, 190.01, 5.0)  # last + size
    stream.size(8, 123456.0)  # volume
    stream.size(0, 300.0)  # bid size changed
    stream.size(0, 300.0)  # repeated size: nothing new, no event
    stream.price(6, 191.0, 0.0)  # the session's high: a new value, an event
    stream.price(6, 191.0, 0.0)  # the same high again: no event
    stream.price(21, 1.0, 0.0)  # a tick type a Tick does not carry: no event
    stream.price(1, 190.0, 100.0)  # an unchanged bid price is still a new upstream tick
    assert not sub.poll(50)  # nothing leaves before the read is over
    fan.flush()
    topic, batch = recv(sub)
    assert not sub.poll(100)  # one message for the whole read
    assert topic == "tick.AAPL" and isinstance(batch, Ticks)
    ticks = batch.ticks
    assert all(isinstance(t, Tick) for t in ticks)
    assert batch.seq == 1 and [t.seq for t in ticks] == [1, 2, 3, 4, 5, 6, 7]
    assert all(0 < t.ts <= batch.ts for t in ticks)
    first, last = ticks[0], ticks[-1]
    assert first.bid == 190.0 and first.bid_size == 100.0 and math.isnan(first.ask)
    assert (last.bid, last.ask, last.last) == (190.0, 190.02, 190.01)
    assert (last.bid_size, last.ask_size, last.last_size, last.volume) == (100.0, 200.0, 5.0,
                                                                           123456.0)
    assert last.high == 191.0 and math.isnan(last.low) and last.greeks is None
    assert stream.ticks == 7 and stream.last_ts == last.ts
    # The topic's last value is the last tick alone, as a plain Tick.
    _, seqs, raws = fan.snapshot("tick.AAPL")
    # (repr: the unknown open/low/close are NaN, which never equals itself)
    assert seqs == [7] and repr(wire.decode_event(bytes(raws[0]))) == repr(last)


def test_option_greeks_and_session_prices_ride_on_the_tick(pubsub) -> None:
    fan, sub = pubsub
    stream = fan.tick_stream("tick.7", info(7, "SPY", "OPT"))
    seen: list[tuple[int, tuple[float, ...]]] = []

    class Tap:  # the front door's view: every computation, before the filter
        def greeks(self, tick_type: int, attrib: int, values: tuple[float, ...]) -> None:
            seen.append((tick_type, values))

        def price(self, tick_type: int, price: float, size: float) -> None:
            seen.append((tick_type, (price,)))

    stream.taps = (Tap(),)
    model = (0.18, 0.52, 13.3, 0.0, 0.013, 0.77, -0.18, 590.0)
    stream.greeks(10, 1, (0.17, 0.51, 13.2, 0.0, 0.013, 0.77, -0.18, 590.0))  # bid: taps only
    stream.greeks(13, 1, model)
    stream.price(75, 12.5, 0.0)  # a delayed close
    fan.flush()
    _, batch = recv(sub)
    assert isinstance(batch, Ticks) and len(batch.ticks) == 2
    first, second = batch.ticks
    assert first.greeks is not None and tuple(msgspec.structs.astuple(first.greeks)) == model
    assert first.greeks.delta == 0.52 and math.isnan(first.close)
    assert second.close == 12.5 and second.greeks == first.greeks
    assert [t for t, _ in seen] == [10, 13, 75]


def test_a_lone_tick_is_a_plain_tick_and_each_instrument_its_own_message(pubsub) -> None:
    fan, sub = pubsub
    aapl = fan.tick_stream("tick.AAPL", info(1, "AAPL"))
    msft = fan.tick_stream("tick.MSFT", info(2, "MSFT"))
    fan.flush()  # nothing pending: nothing sent
    assert not sub.poll(50)
    aapl.price(1, 1.0, 1.0)
    msft.price(2, 3.0, 1.0)
    msft.price(2, 3.5, 1.0)
    fan.flush()
    (t1, e1), (t2, e2) = recv(sub), recv(sub)
    assert (t1, type(e1), e1.seq) == ("tick.AAPL", Tick, 1)
    assert (t2, type(e2)) == ("tick.MSFT", Ticks)
    assert [t.seq for t in e2.ticks] == [1, 2]  # type: ignore[attr-defined]
    fan.flush()  # already flushed: nothing again
    assert not sub.poll(50)
    aapl.price(1, 2.0, 1.0)
    fan.flush()
    assert [t.seq for t in recv_ticks(sub)] == [2]


def test_delayed_tick_types(pubsub) -> None:
    fan, sub = pubsub
    stream = fan.tick_stream("tick.IBM", info(8314, "IBM"))
    stream.price(66, 150.0, 1.0)
    stream.price(67, 150.5, 2.0)
    stream.size(74, 10.0)
    fan.flush()
    t = recv_ticks(sub)[-1]
    assert (t.bid, t.ask, t.volume) == (150.0, 150.5, 10.0)


def test_snapshot_and_seq_survive_resubscription(pubsub) -> None:
    fan, _sub = pubsub
    aapl = fan.tick_stream("tick.AAPL", info(1, "AAPL"))
    msft = fan.tick_stream("tick.MSFT", info(2, "MSFT"))
    aapl.price(1, 1.0, 1.0)
    aapl.price(1, 2.0, 1.0)
    msft.price(2, 3.0, 1.0)
    fan.flush()  # the upstream reader's end of read
    fan.status("CONNECTED", "state", 0, "up", 0)
    topics, seqs, raws = fan.snapshot("tick.AAPL")
    assert (topics, seqs) == (["tick.AAPL"], [2])
    last = wire.decode_event(bytes(raws[0]))
    assert isinstance(last, Tick) and last.bid == 2.0
    topics, seqs, _ = fan.snapshot("tick.")
    assert (topics, seqs) == (["tick.AAPL", "tick.MSFT"], [2, 1])
    topics, _, _ = fan.snapshot("")
    assert topics == ["hub.status", "tick.AAPL", "tick.MSFT"]
    # Cancelled: no stale last value; a new stream on the topic continues its sequence.
    fan.forget_last("tick.AAPL")
    assert fan.snapshot("tick.AAPL") == ([], [], [])
    again = fan.tick_stream("tick.AAPL", info(1, "AAPL"))
    again.price(1, 5.0, 1.0)
    fan.flush()
    assert fan.snapshot("tick.AAPL")[1] == [3]


def test_status_error_and_bar_events(pubsub) -> None:
    fan, sub = pubsub
    fan.status("RECONNECTING", "state", 1100, "lost", 2)
    fan.error("lease1", 354, "not subscribed", "explained", "tick.AAPL")
    bars = fan.bar_stream("bar.AAPL", info(1, "AAPL"))
    bars.bar(1_700_000_000, 1.0, 2.0, 0.5, 1.5, 100.0, 1.2, 7)
    (t1, s), (t2, e), (t3, b) = recv(sub), recv(sub), recv(sub)
    assert t1 == "hub.status" and isinstance(s, HubStatus)
    assert (s.seq, s.state, s.kind, s.code, s.reconnect_count) == (1, "RECONNECTING", "state",
                                                                    1100, 2)
    assert t2 == "error.lease1" and isinstance(e, ErrorEvent)
    assert (e.lease, e.ib_code, e.topic, e.explanation) == ("lease1", 354, "tick.AAPL",
                                                             "explained")
    assert t3 == "bar.AAPL" and isinstance(b, Bar)
    assert (b.seq, b.time, b.high, b.count) == (1, 1_700_000_000, 2.0, 7)


def test_each_read_is_also_published_as_one_bundle(pubsub) -> None:
    fan, sub = pubsub
    bundles = sub.context.socket(zmq.SUB)
    bundles.setsockopt(zmq.LINGER, 0)
    bundles.setsockopt(zmq.RCVTIMEO, 2000)
    bundles.connect(sub.getsockopt(zmq.LAST_ENDPOINT).decode())
    bundles.subscribe(TOPIC_BUNDLE.encode())
    try:
        aapl = fan.tick_stream("tick.AAPL", info(1, "AAPL"))
        msft = fan.tick_stream("tick.MSFT", info(2, "MSFT"))
        # until the bundle subscription has reached the publisher, reads go unseen
        while True:
            aapl.price(1, 1.0, 1.0)
            fan.flush()
            if bundles.poll(20):
                break
        while bundles.poll(50):
            bundles.recv_multipart()
        while sub.poll(50):
            sub.recv_multipart()
        aapl.price(1, 2.0, 1.0)
        msft.price(2, 3.0, 1.0)
        msft.price(2, 3.5, 1.0)
        fan.flush()
        per_topic = [sub.recv_multipart() for _ in range(2)]
        topic, payload = bundles.recv_multipart()
        assert topic == TOPIC_BUNDLE.encode() and not bundles.poll(50)
        bundle = wire.decode_event(payload)
        assert isinstance(bundle, Bundle) and bundle.seq > 1
        # the read's messages, in publish order, each exactly as on its own topic
        assert [t for t, _ in bundle.messages] == ["tick.AAPL", "tick.MSFT"]
        assert [(t.encode(), wire.encode(e)) for t, e in bundle.messages] == \
            [(t, p) for t, p in per_topic]
        assert isinstance(bundle.messages[1][1], Ticks)
        assert fan.published()["bundle"] == bundle.seq
        fan.flush()  # nothing pending: no bundle either
        assert not bundles.poll(50)
    finally:
        bundles.close(0)
