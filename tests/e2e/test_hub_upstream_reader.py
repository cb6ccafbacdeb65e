"""The upstream's socket reader: framing across reads, fast tick dispatch, bad input.

Fed bytes directly (what the event loop's transport would deliver), so every split
of a frame across reads is covered deterministically.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from ibhub.config import HubSettings
from ibhub.ib.session import Upstream
from tests.ibclient import IB


def frame(*fields: object) -> bytes:
    body = b"".join(str(f).encode() + b"\0" for f in fields)
    return struct.pack(">I", len(body)) + body


class Sink:
    def __init__(self) -> None:
        self.prices: list[tuple[int, float, float]] = []
        self.sizes: list[tuple[int, float]] = []
        self.bars: list[tuple[object, ...]] = []

    def price(self, tick_type: int, price: float, size: float) -> None:
        self.prices.append((tick_type, price, size))

    def size(self, tick_type: int, size: float) -> None:
        self.sizes.append((tick_type, size))

    def bar(self, *values: object) -> None:
        self.bars.append(values)


class Listener:
    def __getattr__(self, name: str):  # every listener callback is a no-op here
        return lambda *args: None


async def ready_upstream(
    flush: Callable[[Sink], None] = lambda sink: None,
) -> tuple[Upstream, Sink, IB]:
    """An upstream after the handshake with one tick sink on req id 7; ``flush`` is
    called with that sink at the end of every read."""
    sink = Sink()
    up = Upstream(HubSettings(), Listener(), flush=lambda: flush(sink))
    ib = IB()
    up._install(ib)
    ib.client._apiReady = True  # as after the handshake
    up._sinks[b"7"] = sink
    return up, sink, ib


async def test_frames_split_anywhere_and_batched() -> None:
    up, sink, ib = await ready_upstream()
    stream = b"".join([
        frame(1, 6, 7, 1, "190.01", "100", 0),
        frame(2, 6, 7, 8, "12345"),
        frame(1, 6, 99, 2, "1.0", "1", 0),  # unknown req id: ignored
        frame(50, 3, 7, 1700000000, 1, 2, 0.5, 1.5, 10, 1.2, 3),
        frame(1, 6, 7, 2, "190.03", "", 0),  # empty size
        frame(1, 6, 7, 4, "", "5", 0),  # empty price: no tick (as ib_insync)
    ])
    for chunk in (stream[i:i + 3] for i in range(0, len(stream), 3)):
        up.reader.on_socket_data(chunk)
    assert sink.prices == [(1, 190.01, 100.0), (2, 190.03, 0.0)]
    assert sink.sizes == [(8, 12345.0)]
    assert sink.bars == [(1700000000, 1.0, 2.0, 0.5, 1.5, 10.0, 1.2, 3)]
    assert ib.client._data == b"" and ib.client._numMsgRecv == 6
    # All in one read gives the same result.
    up2, sink2, _ = await ready_upstream()
    up2.reader.on_socket_data(stream)
    assert sink2.prices == sink.prices and sink2.sizes == sink.sizes


async def test_other_messages_reach_ib_insync_and_bad_ticks_are_dropped() -> None:
    up, sink, ib = await ready_upstream()
    errors: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append((req_id, code, msg))
    up.reader.on_socket_data(
        frame(1, 6, 7)  # truncated tickPrice
        + frame(1, 6, 7, 1, "not-a-price", "1", 0)
        + frame(4, 2, -1, 2104, "Market data farm connection is OK:usfarm", "")
        + frame(1, 6, 7, 1, "10.5", "2", 0)
    )
    assert up.reader.bad_messages == 2
    assert errors == [(-1, 2104, "Market data farm connection is OK:usfarm")]
    assert sink.prices == [(1, 10.5, 2.0)]


async def test_before_the_session_is_ready_ib_insync_reads() -> None:
    up, sink, ib = await ready_upstream()
    ib.client._apiReady = False
    seen: list[bytes] = []
    up.reader._slow_reader = seen.append
    up.reader.on_socket_data(b"abc")
    assert seen == [b"abc"] and sink.prices == []


async def test_ib_insync_decoder_table_routes_ticks_to_us_too() -> None:
    _up, sink, ib = await ready_upstream()
    ib.client.decoder.interpret(["1", "6", "7", "2", "5.25", "3", "0"])
    ib.client.decoder.interpret(["2", "6", "7", "8", "99"])
    assert sink.prices == [(2, 5.25, 3.0)] and sink.sizes == [(8, 99.0)]
    assert not ib.wrapper.pendingTickers  # ib_insync's Ticker machinery never saw them


async def test_each_read_ends_with_one_flush() -> None:
    """The fan-out publishes a read's ticks as one message per instrument: the reader
    must call its flush hook once after each read, after every tick of it."""
    flushes: list[int] = []
    up, _sink, ib = await ready_upstream(lambda sink: flushes.append(len(sink.prices)))
    up.reader.on_socket_data(frame(1, 6, 7, 1, "1.0", "1", 0) + frame(1, 6, 7, 2, "2.0", "1", 0))
    assert flushes == [2]  # once, after both ticks
    up.reader.on_socket_data(frame(1, 6, 7, 1, "3.0", "1", 0)[:5])  # a partial frame: no tick yet
    up.reader.on_socket_data(frame(1, 6, 7, 1, "3.0", "1", 0)[5:])
    assert flushes == [2, 2, 3]
    # ib_insync's own reader (before the session is ready) publishes each tick at once.
    ib.client.decoder.handlers[1](["1", "6", "7", "2", "4.0", "1", "0"])
    assert flushes == [2, 2, 3, 4]
