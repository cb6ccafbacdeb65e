"""The fast tick reader: frames the Gateway socket's bytes itself.

We do not use the IB library's ``Ticker`` machinery (``pendingTickersEvent`` /
``ticker.ticks``): it allocates a ``TickData`` per tick, deduplicates unchanged
bid/ask ticks (so not every upstream message would become an event) and emits
per-packet events we don't need. Instead the decoder's handler table entries
for tickPrice (1), tickSize (2) and realtimeBar (50) are replaced with small
functions that parse the fields and call the subscription's stream directly:
one upstream tick message -> one dict lookup, three int/float conversions, one
published event. Market data is requested on request ids the session owns
(:mod:`ibhub.ib.session`), so the library keeps no ticker state for them. Once the
session is ready the reader takes the socket's data itself (``on_socket_data``):
ticks are framed and parsed straight from bytes; everything else still goes through
the library's decoder, so orders, account data and requests behave as usual.

This module reaches into the library's private fields (``client._apiReady``,
``_data``, ``_onSocketHasData``, ``conn.hasData``, ...); :mod:`ibhub.ib.lib` checks at
start-up that they are still there.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

from ibhub.ib.lib import IB
from ibhub.tws.codec import UNLIMITED_FRAME, split_fields, split_frames

log = logging.getLogger(__name__)

NAN = math.nan

YIELD_READ_BYTES = 64 * 1024  # a read this large means the hub is behind the Gateway
MAX_MESSAGES_PER_TURN = 1000  # ~4 ms of parsing and publishing per loop turn


class TickReader:
    """The socket reader and tick handlers of one Gateway session.

    ``sinks`` maps a live request id (its decimal bytes as they arrive on the wire) to
    the line's stream: the session fills it, the tick handlers look ticks up in it.
    """

    def __init__(self, flush: Callable[[], None]) -> None:
        # Called after every socket read's ticks have been handed to their streams:
        # the fan-out publishes them, one message per instrument (ibhub.hub.fanout).
        self._flush = flush
        self._ib: IB | None = None
        # Live req id -> stream, keyed by the id's decimal bytes as they arrive on the
        # wire, so the hot path looks it up without decoding or parsing it.
        self.sinks: dict[bytes, Any] = {}
        self._fast: dict[bytes, Callable[[list[bytes]], None]] = {}
        # Raw taps (see add_tap): message id bytes -> tap, consulted before the library.
        self._taps: dict[bytes, Callable[[list[bytes]], bool]] = {}
        self._slow_reader: Callable[[bytes], None] = _no_reader
        self.bad_messages = 0
        self._reads_paused = False
        # Tick/bar messages read by our reader (metrics); counted per socket read, not
        # per tick: every message is counted anyway, the rare others are subtracted.
        self.ticks_in = 0

    def install(self, ib: IB) -> None:
        """Hook the tick handlers and the socket reader into ``ib``."""
        self._ib = ib
        handlers = ib.client.decoder.handlers
        self._fast = {
            b"1": self._make_tick_price_handler(),
            b"2": self._make_tick_size_handler(),
            b"50": self._make_bar_handler(),
            b"21": self._make_option_handler(),
            b"45": self._make_generic_handler(b"45"),
            b"46": self._make_generic_handler(b"46"),
        }
        # The same handlers in the library's table (its reader hands over str fields),
        # so market data never reaches its Ticker code whichever reader runs. (Not 21:
        # before the session is ready no line exists, and the library's own handler
        # answers its option calculations.)
        for msg_id in (1, 2, 50):
            handlers[msg_id] = _from_str(self._fast[str(msg_id).encode()], self._flush)
        conn = ib.client.conn
        self._slow_reader = ib.client._onSocketHasData
        conn.hasData -= self._slow_reader
        conn.hasData += self.on_socket_data

    def uninstall(self, ib: IB) -> None:
        """Give the socket back to the library's own reader."""
        ib.client.conn.hasData -= self.on_socket_data
        ib.client.conn.hasData += self._slow_reader

    def add_tap(self, msg_id: int, tap: Callable[[list[bytes]], bool]) -> None:
        """Show raw upstream messages of ``msg_id`` to ``tap`` before ib_insync sees them.

        For the TWS front door, which passes some requests through with remapped ids
        (contract details, historical data): ``tap(fields)`` gets the message's bytes
        fields (the last one is the empty tail after the final NUL) and returns True
        if it consumed the message (a reply to one of its own request ids); otherwise
        the message goes to ib_insync as before. Only after the session is ready, and
        never for ticks/bars (those have their own fast path). A tap must not raise.
        """
        self._taps[str(msg_id).encode()] = tap

    def remove_tap(self, msg_id: int) -> None:
        self._taps.pop(str(msg_id).encode(), None)

    def on_socket_data(self, data: bytes) -> None:
        """Frame and dispatch one socket read once the API session is ready.

        ib_insync's reader re-slices its whole buffer for every message it takes
        (``data = data[end:]``), which is quadratic in the size of a read: a hub
        that falls behind gets reads of hundreds of messages and falls further
        behind. This reader walks the buffer with an offset and keeps only the
        tail. Ticks and bars go straight to our handlers; every other message goes
        through ib_insync's decoder exactly as before. Until the session is ready
        (handshake, nextValidId/managedAccounts) ib_insync's own reader runs.
        """
        ib = self._ib
        assert ib is not None
        client = ib.client
        if not client._apiReady:
            self._slow_reader(data)
            return
        arrived = client._tcpDataArrived
        if arrived is not None:
            arrived()
        buf = client._data + data if client._data else data
        client._numBytesRecv += len(data)
        bodies, pos = split_frames(buf, UNLIMITED_FRAME, MAX_MESSAGES_PER_TURN)
        count = len(bodies)
        other = 0
        fast = self._fast.get
        tapped = self._taps.get
        interpret = client.decoder.interpret
        for body in bodies:
            # Ticks stay bytes (int() and float() take bytes): no decode per tick.
            parts = body.split(b"\0")
            handler = fast(parts[0])
            if handler is None:
                other += 1
                tap = tapped(parts[0])
                if tap is not None and tap(parts):
                    continue
                interpret(split_fields(body))
                continue
            try:
                handler(parts)
            except (ValueError, IndexError):
                # A malformed tick from the Gateway must not stop the reader.
                self.bad_messages += 1
                if self.bad_messages <= 10:
                    log.warning("dropped malformed message %r", parts[:12])
        client._data = buf[pos:]
        client._numMsgRecv += count
        self.ticks_in += count - other
        self._flush()
        processed = client._tcpDataProcessed
        if processed is not None:
            processed()
        backlog = count == MAX_MESSAGES_PER_TURN
        if backlog or len(data) >= YIELD_READ_BYTES:
            self._yield_reads(client.conn.transport, backlog)

    def _yield_reads(self, transport: Any, backlog: bool) -> None:
        """We are behind the Gateway: give the loop a turn before reading more.

        uvloop (libuv) reads a readable socket up to 32 times in one loop iteration,
        each read up to 256 KB (~6,000 ticks): a hub that falls behind then parses
        ticks for hundreds of ms (seconds of wall time on a shared CPU) before its
        ROUTER, heartbeats and timers get a turn, and leases expire. So at most
        ``MAX_MESSAGES_PER_TURN`` messages are handled per turn (the rest stays
        buffered, ``backlog``), and after a large read or with a backlog reading
        pauses until the next loop iteration. Measured with bench/fanout.py at 50k
        ticks/s to 8 subscriber processes on 2 cores: status round trips of up to
        5 s and expired SDK leases before this reader yielded (docs/performance.md).
        """
        if transport is None or self._reads_paused:
            return
        self._reads_paused = True
        transport.pause_reading()
        asyncio.get_running_loop().call_soon(self._resume_reads, transport, backlog)

    def _resume_reads(self, transport: Any, backlog: bool) -> None:
        self._reads_paused = False
        if transport.is_closing() or self._ib is None:
            return
        transport.resume_reading()
        if backlog:
            self.on_socket_data(b"")

    def _make_tick_price_handler(self) -> Callable[[list[bytes]], None]:
        get = self.sinks.get

        def tick_price(fields: list[bytes]) -> None:
            # [1, version, reqId, tickType, price, size, attrMask]
            sink = get(fields[2])
            if sink is not None and fields[4]:
                sink.price(int(fields[3]), float(fields[4]), float(fields[5] or 0.0))

        return tick_price

    def _make_tick_size_handler(self) -> Callable[[list[bytes]], None]:
        get = self.sinks.get

        def tick_size(fields: list[bytes]) -> None:
            # [2, version, reqId, tickType, size]
            sink = get(fields[2])
            if sink is not None:
                sink.size(int(fields[3]), float(fields[4] or 0.0))

        return tick_size

    def _make_bar_handler(self) -> Callable[[list[bytes]], None]:
        get = self.sinks.get

        def realtime_bar(fields: list[bytes]) -> None:
            # [50, version, reqId, time, open, high, low, close, volume, wap, count]
            sink = get(fields[2])
            if sink is not None:
                f = float
                sink.bar(
                    int(fields[3]), f(fields[4]), f(fields[5]), f(fields[6]), f(fields[7]),
                    f(fields[8] or 0.0), f(fields[9] or 0.0), int(fields[10] or 0),
                )

        return realtime_bar

    def _make_option_handler(self) -> Callable[[list[bytes]], None]:
        get = self.sinks.get
        taps = self._taps

        def tick_option(fields: list[bytes]) -> None:
            # [21, reqId, tickType, tickAttrib, impliedVol, delta, optPrice, pvDividend,
            #  gamma, vega, theta, undPrice]: a line's greeks go to its stream; any other
            # id is an option calculation of the library or a front-door route
            sink = get(fields[1])
            if sink is not None:
                v = _not_computed
                sink.greeks(int(fields[2]), int(fields[3] or 0), (
                    v(fields[4], -1.0), v(fields[5], -2.0), v(fields[6], -1.0),
                    v(fields[7], -1.0), v(fields[8], -2.0), v(fields[9], -2.0),
                    v(fields[10], -2.0), v(fields[11], -1.0)))
                return
            tap = taps.get(b"21")
            if tap is not None and tap(fields):
                return
            ib = self._ib
            # only what the library waits for: a computation still in flight for a
            # line just cancelled is dropped here, as its ticks are
            if ib is not None and int(fields[1]) in ib.wrapper._futures:
                ib.client.decoder.interpret([f.decode() for f in fields[:-1]])

        return tick_option

    def _make_generic_handler(self, msg_id: bytes) -> Callable[[list[bytes]], None]:
        get = self.sinks.get
        to_library = self._to_library
        generic = msg_id == b"45"

        def tick_generic(fields: list[bytes]) -> None:
            # [45, version, reqId, tickType, value] tickGeneric / [46, ...] tickString:
            # a line's (generic ticks, the last trade's timestamp) go to its stream's
            # taps; anything else to the library as before
            sink = get(fields[2])
            if sink is None:
                to_library(fields)
            elif generic:
                sink.generic(int(fields[3]), float(fields[4] or 0.0))
            else:
                sink.string(int(fields[3]), fields[4])

        return tick_generic

    def _to_library(self, fields: list[bytes]) -> None:
        ib = self._ib
        if ib is not None:
            ib.client.decoder.interpret([f.decode(errors="replace") for f in fields[:-1]])


def _not_computed(value: bytes, marker: float) -> float:
    """A tickOptionComputation value; IB's "not computed" markers (-1 for vols and
    prices, -2 for greeks, empty, or its unset double 1.797E308) become NaN."""
    if not value:
        return NAN
    v = float(value)
    return NAN if v == marker or not -1e300 < v < 1e300 else v


def _from_str(
    handler: Callable[[list[bytes]], None], flush: Callable[[], None]
) -> Callable[[list[str]], None]:
    """A fast handler for ib_insync's own reader (before the session is ready): str fields
    and no end-of-read hook there, so each message is published at once."""

    def from_str(fields: list[str]) -> None:
        handler([f.encode() for f in fields])
        flush()

    return from_str


def _no_reader(data: bytes) -> None:  # pragma: no cover - replaced in start()
    raise RuntimeError("upstream not started")
