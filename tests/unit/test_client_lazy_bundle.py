"""``bundle.tick`` read lazily (client/bundle.py): the same events as the eager decode,
only the held topics decoded, and a tap that gets a message both ways delivers it once."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from ibhub import wire
from ibhub.client.batch import Batch, Tap
from ibhub.client.bundle import BUNDLE_KEY, LazyBundle, decode_bundle, decode_message
from ibhub.client.topics import TopicTable
from ibhub.protocol import TOPIC_BUNDLE, Bundle, ContractSpec, Tick, Ticks


def tick(seq: int, ts: int, symbol: str = "AAPL") -> Tick:
    return Tick(seq, ts, 1, symbol, 1.0, 2.0, 1.5, 1, 1, 1, 10, 9.0, 11.0, 8.0, 9.5)


BUNDLE = Bundle(7, 99, [("tick.AAPL", Ticks(1, 10, [tick(1, 10), tick(2, 11)])),
                        ("tick.MSFT", tick(4, 12, "MSFT")),
                        ("tick.AMD", tick(9, 13, "AMD"))])


def test_lazy_bundle_reads_the_bundle_wire_format() -> None:
    payload = wire.encode(BUNDLE)
    lazy = decode_bundle(payload)
    assert type(lazy) is LazyBundle and (lazy.seq, lazy.ts) == (7, 99)
    assert [(n, decode_message(r)) for n, r in lazy.messages] == BUNDLE.messages
    assert BUNDLE_KEY == TOPIC_BUNDLE.encode()
    with pytest.raises(msgspec.ValidationError):  # another event is not a bundle
        decode_bundle(wire.encode(tick(1, 1)))


class FakeStream:
    def __init__(self) -> None:
        self.topics: list[str] = []

    def subscribe(self, topic: str) -> None:
        self.topics.append(topic)

    def unsubscribe(self, topic: str) -> None:
        self.topics.remove(topic)


def test_table_decodes_only_held_topics_and_skips_a_broken_one() -> None:
    stream = FakeStream()
    table = TopicTable(stream, None, lambda c, w: None, lambda e: None,  # type: ignore[arg-type]
                       lambda e: None)
    table.use_bundle()
    assert TOPIC_BUNDLE in stream.topics
    got: list[Any] = []
    entry = table.add("tick.AAPL", ContractSpec(symbol="AAPL"), "ticks")
    entry.sequencer.deliver_all = got.extend
    entry.sequencer.deliver = got.append
    assert "tick.AAPL" not in stream.topics  # ticks come from the bundle only
    # MSFT's bytes are garbage: not held, so never decoded; AAPL's decode
    lazy = decode_bundle(wire.encode(BUNDLE))
    broken = LazyBundle(lazy.seq, lazy.ts, [lazy.messages[0], ("tick.MSFT", msgspec.Raw(b"\xc1"))])
    table.on_event(TOPIC_BUNDLE, broken)
    assert [t.seq for t in got] == [1, 2] and table.undecodable == 0
    # a held topic whose message does not decode is counted and skipped, others go on
    table.add("tick.MSFT", ContractSpec(symbol="MSFT"), "ticks")
    table.on_event(TOPIC_BUNDLE, broken)
    assert table.undecodable == 1
    with pytest.raises(RuntimeError):
        table.use_bundle()


def test_tap_delivers_once_what_came_by_topic_and_by_bundle() -> None:
    got: list[Batch] = []
    tap = Tap("tick.", got.append, 10, spawn=lambda c, w: None, close=lambda t: None)
    tap.on_message("tick.AAPL", BUNDLE.messages[0][1])
    tap.on_message(TOPIC_BUNDLE, decode_bundle(wire.encode(BUNDLE)))  # AAPL again
    assert [(b.topic, b.first_seq, b.last_seq, b.restarted) for b in got] == [
        ("tick.AAPL", 1, 2, False), ("tick.MSFT", 4, 4, False), ("tick.AMD", 9, 9, False)]
    assert (tap.restarts, tap.stale) == (0, 2)
    tap.on_message("tick.AAPL", tick(1, 50))  # a restarted hub: from 1, stamped later
    assert got[-1].restarted and tap.restarts == 1
