"""PUB side: event -> topic, per-topic sequence numbers, last-value cache.

Every event gets the next sequence number of its topic (from 1) and the hub's
wall clock in ns, and its encoded payload is kept as the topic's last value, so a
snapshot request can hand a late or lossy subscriber the current state with the
sequence number to continue from (zguide "Clone" pattern).

Hot path: a :class:`TickStream` per subscription holds the top of book,
its topic's bytes key and a bound ``publish``. An upstream tick costs one tuple (the
array-like ``Tick`` without building the struct) appended to the stream's pending
list; when the upstream reader has handled a whole socket read it calls
:meth:`Fanout.flush`, and each stream with pending ticks hands them over as one
message (a ``Tick`` if it has one, else a ``Ticks`` batch): one msgpack encode of the
read's bundle, and, for an instrument somebody subscribes to, one encode and two
plain ``send()`` calls on its topic, per read instead of per tick. A read is
what the Gateway wrote at once, so batching adds no waiting: the first tick of a
read waits only for the rest of that read to be parsed (~1 us per message).
Nothing is logged per tick. Topics and their sequence counters
live as long as the hub, so a subscription that is cancelled and later taken
again continues its topic's sequence instead of restarting at 1 (a restart would
look like a gap, or worse, like old data, to a subscriber that kept listening).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

import msgspec
import zmq

from ibhub.hub.depth import DepthStream
from ibhub.hub.hist_updates import HistUpdateStream, parse_kind
from ibhub.hub.line_stream import LineStream
from ibhub.hub.tbt import TbtStream
from ibhub.hub.xpub import XpubSubscriptions
from ibhub.protocol import (
    TOPIC_BAR,
    TOPIC_BUNDLE,
    TOPIC_DEPTH,
    TOPIC_ERROR,
    TOPIC_HBAR,
    TOPIC_STATUS,
    TOPIC_TBT,
    TOPIC_TICK,
    Bar,
    Bundle,
    ContractInfo,
    ErrorEvent,
    Event,
    HubStatus,
    Tick,
    Ticks,
)
from ibhub.wire import Interest, Publisher, encode

log = logging.getLogger(__name__)

NAN: Final = float("nan")
# Lines with a generic tick list (ibhub.hub.subscriptions.GENERIC_KIND_PREFIX) publish
# their Ticks here, apart from the plain line's topic: the TWS front door reads them
# through its taps; SDK subscribers use the plain tick topics.
TOPIC_GENERIC_TICK: Final = "gtick."
TICK_TAG: Final = Tick.__struct_config__.tag
TICKS_TAG: Final = Ticks.__struct_config__.tag
BUNDLE_TAG: Final = Bundle.__struct_config__.tag
PUB_SNDHWM: Final = 50_000  # per subscriber; ~0.5 s of a 100k ticks/s burst


#: tickPrice types of the session's prices -> TickStream attribute (live and delayed)
_OHLC: Final = {6: "high", 7: "low", 9: "close", 14: "open",
                72: "high", 73: "low", 75: "close", 76: "open"}


def _nothing() -> None:
    pass


class Topic:
    """One topic's sequence counter and last encoded event.

    A tick stream leaves its last tick as the array-like tuple in :attr:`tick` and it is
    encoded only when :attr:`last` is read (a snapshot): the flush of a Gateway read
    then encodes what it publishes and nothing more (docs/performance.md 8.6).
    """

    __slots__ = ("_last", "key", "name", "seq", "tick")

    def __init__(self, name: str) -> None:
        self.name = name
        self.key = name.encode()
        self.seq = 0
        self._last: bytes | None = None
        self.tick: tuple[Any, ...] | None = None  # the last Tick, not yet encoded

    @property
    def last(self) -> bytes | None:
        """The last event, encoded (None before the first or after ``forget_last``)."""
        tick = self.tick
        if tick is not None:
            self._last = encode(tick)
            self.tick = None
        return self._last

    @last.setter
    def last(self, payload: bytes | None) -> None:
        self._last = payload
        self.tick = None


class TickStream:
    """Top of book for one subscription; turns each upstream tick into one :class:`Tick`.

    ``price`` handles a tickPrice message (bid/ask/last with their size, and the
    session's open/high/low/close), ``size`` a tickSize message (bid/ask/last size,
    volume), ``greeks`` a tickOptionComputation (the model's, tick type 13 or delayed
    83, becomes ``Tick.greeks``; bid/ask/last computations only reach the taps). Other
    tick types change nothing a :class:`Tick` carries and publish nothing. A tickSize
    that repeats the size already known (IB sends the size inside tickPrice and may
    repeat it as tickSize) publishes nothing either, nor does an unchanged OHLC price.
    """

    __slots__ = (
        "_dirty",
        "_pending",
        "_publish",
        "_publisher",
        "_topic",
        "ask",
        "ask_size",
        "bid",
        "bid_size",
        "close",
        "con_id",
        "greeks_",
        "high",
        "last",
        "last_size",
        "last_ts",
        "low",
        "open",
        "symbol",
        "taps",
        "ticks",
        "volume",
    )

    def __init__(
        self,
        topic: Topic,
        con_id: int,
        symbol: str,
        publisher: Publisher,
        dirty: Callable[[TickStream], None],
    ) -> None:
        self._topic = topic
        self._publisher = publisher
        self._publish = publisher.publish
        self._dirty = dirty  # called with self when the first tick of a batch is pending
        self._pending: list[tuple[Any, ...]] = []
        self.con_id = con_id
        self.symbol = symbol
        self.bid = self.ask = self.last = NAN
        self.bid_size = self.ask_size = self.last_size = self.volume = NAN
        self.open = self.high = self.low = self.close = NAN
        self.greeks_: tuple[float, ...] | None = None  # the last model computation
        self.ticks = 0
        self.last_ts = 0
        # Other consumers of this line's raw ticks (the TWS front door), called with
        # every upstream tick before the top-of-book filter; () costs one empty loop.
        self.taps: tuple[Any, ...] = ()

    @property
    def topic(self) -> str:
        return self._topic.name

    def price(self, tick_type: int, price: float, size: float) -> None:
        for tap in self.taps:
            tap.price(tick_type, price, size)
        if tick_type == 1 or tick_type == 66:
            self.bid = price
            self.bid_size = size
        elif tick_type == 2 or tick_type == 67:
            self.ask = price
            self.ask_size = size
        elif tick_type == 4 or tick_type == 68:
            self.last = price
            self.last_size = size
        else:
            # the session's high/low/close/open (live 6/7/9/14, delayed 72/73/75/76);
            # rare next to quotes, so they stay off the branches above
            ohlc = _OHLC.get(tick_type)
            if ohlc is None or getattr(self, ohlc) == price:
                return
            setattr(self, ohlc, price)
        self._emit()

    def greeks(self, tick_type: int, attrib: int, values: tuple[float, ...]) -> None:
        """A tickOptionComputation: ``values`` in IB's order (impliedVol, delta, optPrice,
        pvDividend, gamma, vega, theta, undPrice), IB's "not computed" markers as NaN."""
        for tap in self.taps:
            tap.greeks(tick_type, attrib, values)
        if tick_type == 13 or tick_type == 83:
            self.greeks_ = values
            self._emit()

    def generic(self, tick_type: int, value: float) -> None:
        """A tickGeneric (volatilities, shortable, ...): nothing a Tick carries; taps only."""
        for tap in self.taps:
            tap.generic(tick_type, value)

    def string(self, tick_type: int, value: bytes) -> None:
        """A tickString (last trade time, RTVolume, dividends, ...): taps only."""
        for tap in self.taps:
            tap.string(tick_type, value)

    def size(self, tick_type: int, size: float) -> None:
        for tap in self.taps:
            tap.size(tick_type, size)
        if tick_type == 0 or tick_type == 69:
            if size == self.bid_size:
                return
            self.bid_size = size
        elif tick_type == 3 or tick_type == 70:
            if size == self.ask_size:
                return
            self.ask_size = size
        elif tick_type == 5 or tick_type == 71:
            if size == self.last_size:
                return
            self.last_size = size
        elif tick_type == 8 or tick_type == 74:
            self.volume = size
        else:
            return
        self._emit()

    def _emit(self) -> None:
        topic = self._topic
        seq = topic.seq + 1
        topic.seq = seq
        ts = time.time_ns()
        pending = self._pending
        if not pending:
            self._dirty(self)
        # The tuple encodes to exactly the bytes of the array-like Tick struct
        # (tag first, then the fields in order) without building the struct:
        # 0.12 us instead of 0.26 us per tick, measured.
        pending.append(
            (
                TICK_TAG,
                seq,
                ts,
                self.con_id,
                self.symbol,
                self.bid,
                self.ask,
                self.last,
                self.bid_size,
                self.ask_size,
                self.last_size,
                self.volume,
                self.open,
                self.high,
                self.low,
                self.close,
                self.greeks_,
            )
        )
        self.ticks += 1
        self.last_ts = ts

    def take(self, now: int) -> tuple[Any, ...]:
        """The pending ticks as one message, not encoded: the read's bundle embeds it as
        is (one encode for the whole read). It is a ``Tick`` (one tick) or a ``Ticks``
        batch published ``now``, and it also goes out on the stream's own topic when a
        subscriber wants that topic (else only counted as skipped). The last tick becomes
        the topic's value (encoded when a snapshot asks: a single Tick, whatever went
        out)."""
        pending = self._pending
        self._pending = []
        topic = self._topic
        topic.tick = pending[-1]
        message = pending[0] if len(pending) == 1 else (TICKS_TAG, pending[0][1], now, pending)
        publisher = self._publisher
        if publisher.wants(topic.key):
            self._publish(topic.key, encode(message))
        else:
            publisher.skipped += 1
        return message

    def settle(self, now: int) -> None:
        """:meth:`take` for a read whose bundle nobody takes: when nobody wants this
        topic either, only the last tick is kept (no message built, no encode)."""
        pending = self._pending
        topic = self._topic
        publisher = self._publisher
        if publisher.wants(topic.key):
            self.take(now)
            return
        self._pending = []
        topic.tick = pending[-1]
        publisher.skipped += 1


class BarStream(LineStream):
    """Publishes each upstream 5-second real-time bar as one :class:`Bar` (its taps are
    called with every bar, as TickStream's with every tick)."""

    __slots__ = ()

    def bar(
        self,
        time_: int,
        open_: float,
        high: float,
        low: float,
        close: float,
        volume: float,
        wap: float,
        count: int,
    ) -> None:
        for tap in self.taps:
            tap.bar(time_, open_, high, low, close, volume, wap, count)
        topic = self._topic
        topic.seq += 1
        ts = time.time_ns()
        payload = encode(
            Bar(
                topic.seq, ts, self.con_id, self.symbol, time_, open_, high, low, close, volume,
                wap, count,
            )
        )
        topic.last = payload
        self.ticks += 1
        self.last_ts = ts
        self._publish(topic.key, payload)


class TeePublisher(Publisher):
    """A :class:`Publisher` that also keeps what it published for a second consumer (the
    NATS bridge, :mod:`ibhub.hub.nats_bridge`): after the two ``send()`` calls (skipped,
    as by :class:`Publisher`, when no ZeroMQ subscriber wants the topic), one tuple
    appended per publish (per instrument per read, never per tick), whoever subscribes:
    the bridge mirrors everything. The first of a loop turn calls ``wake``. The consumer
    :meth:`take` s the list on its next turn."""

    __slots__ = ("_out", "_wake")

    def __init__(self, socket: zmq.Socket[bytes], wake: Callable[[], None],
                 interest: Interest | None = None) -> None:
        super().__init__(socket, interest)
        self._out: list[tuple[bytes, bytes]] = []
        self._wake = wake

    def wants(self, topic: bytes) -> bool:
        return True  # the bridge takes every message

    def publish(self, topic: bytes, payload: bytes) -> None:
        super().publish(topic, payload)  # the bridge runs only with --nats: one call more
        out = self._out
        if not out:
            self._wake()
        out.append((topic, payload))

    def take(self) -> list[tuple[bytes, bytes]]:
        out, self._out = self._out, []
        return out

    def put_back(self, messages: list[tuple[bytes, bytes]]) -> None:
        """Put ``messages`` (taken earlier) in front of what was published since."""
        if messages:
            if not self._out:
                self._wake()
            self._out[:0] = messages


class Fanout:
    """Owns the PUB socket's publisher and every topic's state.

    With ``subscriptions`` (the hub's XPUB socket, :mod:`ibhub.hub.xpub`) the publisher
    sends only topics somebody subscribes to; topics nobody wants still get their
    sequence numbers and last values (snapshots, the front door and the lane read them).
    Without, it publishes everything on a plain PUB socket.
    """

    def __init__(self, socket: zmq.Socket[bytes],
                 subscriptions: XpubSubscriptions | None = None) -> None:
        self.subscriptions = subscriptions
        self._sync: Callable[[], None] = (subscriptions.sync if subscriptions is not None
                                          else _nothing)
        self.publisher = Publisher(socket, subscriptions.interest
                                   if subscriptions is not None else None)
        self._topics: dict[str, Topic] = {}
        self._owner: dict[str, int] = {}  # market-data topic -> con_id that named it
        self._retired: dict[str, int] = {}  # events of dropped topics, by family (metrics)
        self._listeners: list[tuple[tuple[str, ...], Callable[[str, Event], None]]] = []
        self._dirty: list[TickStream] = []  # streams with ticks waiting for flush()
        self._books: list[DepthStream] = []  # depth books changed by this read
        self._bundle: Topic | None = None  # bundle.tick, from the first bundle; no last value
        # Also handed every bundle's payload while the lane has tick connections
        # (LaneServer sets it: ibhub.hub.lane, "Ticks on the lane"); None otherwise.
        self.bundle_sink: Callable[[bytes], None] | None = None

    def tee(self, wake: Callable[[], None]) -> TeePublisher:
        """Publish through a :class:`TeePublisher` from now on (before any stream exists:
        streams bind the publisher's ``publish`` when made). Without a tee the hot path is
        the plain :class:`Publisher`, untouched."""
        if self._topics and any(n.startswith((TOPIC_TICK, TOPIC_BAR)) for n in self._topics):
            raise RuntimeError("Fanout.tee() after market-data streams were made")
        old = self.publisher
        tee = TeePublisher(old.socket, wake, old.interest)
        tee.skipped = old.skipped
        self.publisher = tee
        return tee

    def topic(self, name: str) -> Topic:
        t = self._topics.get(name)
        if t is None:
            t = self._topics[name] = Topic(name)
        return t

    def topic_for(self, contract: ContractInfo, kind: str) -> str:
        """The topic for an instrument: tick.AAPL, tick.EURUSD, or tick.<conId>.

        STK uses the symbol, CASH symbol+currency; anything else (futures, options:
        a symbol does not identify them) and any name already owned by a different
        conId use the conId form. Ownership is permanent for the hub's life.
        """
        if kind.startswith("ticks+"):  # a generic-tick line: gtick.<conId>.<list>
            return f"{TOPIC_GENERIC_TICK}{contract.con_id}.{kind[6:]}"
        prefix = {"ticks": TOPIC_TICK, "depth": TOPIC_DEPTH}.get(kind, TOPIC_BAR)
        if kind.startswith("bars."):  # bar.bid.AAPL: lower case never clashes with a symbol
            prefix += kind.partition(".")[2].lower() + "."
        elif kind.startswith("tbt."):  # tbt.bidask.AAPL
            prefix = TOPIC_TBT + kind.partition(".")[2].lower() + "."
        elif kind.startswith("hist."):  # hbar.1min.trades.AAPL
            size, what = parse_kind(kind)
            prefix = f"{TOPIC_HBAR}{size.replace(' ', '')}.{what.lower()}."
        if contract.sec_type == "STK":
            name = prefix + contract.symbol
        elif contract.sec_type == "CASH":
            name = prefix + contract.symbol + contract.currency
        else:
            name = ""
        if not name or self._owner.get(name, contract.con_id) != contract.con_id:
            name = f"{prefix}{contract.con_id}"
        self._owner[name] = contract.con_id
        return name

    def tick_stream(self, topic: str, contract: ContractInfo) -> TickStream:
        return TickStream(
            self.topic(topic), contract.con_id, contract.symbol, self.publisher,
            self._dirty.append,
        )

    def flush(self) -> None:
        """Publish every tick stream's pending ticks (the upstream reader ends each read
        here), then the read's bundle: the same messages again as one, on ``bundle.tick``.

        The bundle is encoded in one call from the streams' messages (:meth:`TickStream.
        take`); each inner message encodes to exactly the bytes its own topic carries, and
        is encoded separately only for a topic somebody subscribes to (encoding every
        stream and embedding the bytes as ``msgspec.Raw`` cost ~11 us more per read at
        10k ticks/s, ``python bench/fanout_flush.py``). ``bundle_sink`` (the
        lane's tick connections) gets the same payload. When nobody wants the bundle (no
        PUB subscriber, no sink), only its sequence number moves (no encode, no send).
        If this read sent anything, the XPUB's subscription messages are read
        (:meth:`XpubSubscriptions.sync`): a send may have taken the socket's edge of one
        that arrived, so the loop would not be told of it.
        """
        if self._books:
            books, self._books = self._books, []
            for book in books:
                book.flush()
        dirty = self._dirty
        if dirty:
            bundle = self._bundle
            if bundle is None:
                bundle = self._bundle = self.topic(TOPIC_BUNDLE)
            seq = bundle.seq + 1
            bundle.seq = seq
            publisher = self.publisher
            sink = self.bundle_sink
            now = time.time_ns()  # the publish time of the read's batches and bundle
            if sink is not None or publisher.wants(bundle.key):
                messages = [(stream.topic, stream.take(now)) for stream in dirty]
                payload = encode((BUNDLE_TAG, seq, now, messages))
                publisher.publish(bundle.key, payload)
                if sink is not None:
                    sink(payload)
            else:
                for stream in dirty:
                    stream.settle(now)
            dirty.clear()
        self._sync_after_sends()

    def _sync_after_sends(self) -> None:
        """Read the XPUB's subscription messages if anything was sent since the last
        time: a send may have taken the socket's edge of one that arrived, so the loop
        would not be told of it (ibhub.hub.xpub)."""
        publisher = self.publisher
        if publisher.sent:
            publisher.sent = False
            self._sync()

    def depth_stream(self, topic: str, contract: ContractInfo, rows: int) -> DepthStream:
        """A depth book published once per Gateway read that changed it."""
        return DepthStream(self.topic(topic), contract.con_id, contract.symbol,
                           self.publisher, self._books.append, rows)

    def tbt_stream(self, topic: str, contract: ContractInfo, kind: str) -> TbtStream:
        """A shared tick-by-tick line: one event per upstream tick."""
        return TbtStream(self.topic(topic), contract.con_id, contract.symbol, kind[4:],
                         self.publisher)

    def hist_stream(self, topic: str, contract: ContractInfo) -> HistUpdateStream:
        """A shared keepUpToDate line: one Bar per upstream update."""
        return HistUpdateStream(self.topic(topic), contract.con_id, contract.symbol,
                                self.publisher)

    def bar_stream(self, topic: str, contract: ContractInfo) -> BarStream:
        return BarStream(self.topic(topic), contract.con_id, contract.symbol, self.publisher)

    def forget_last(self, name: str) -> None:
        """Drop a topic's last value (its subscription ended; the value would go stale)."""
        t = self._topics.get(name)
        if t is not None:
            t.last = None

    def drop(self, name: str) -> None:
        """Forget a topic entirely (an ended lease's ``error.<lease>``: ids never return)."""
        t = self._topics.pop(name, None)
        if t is not None:
            family = name.split(".", 1)[0]
            self._retired[family] = self._retired.get(family, 0) + t.seq

    def published(self) -> dict[str, int]:
        """Events published so far per topic family ("tick", "bar", "status", ...).

        Read at scrape time (:mod:`ibhub.hub.ops.metrics`): the sum of the topics' sequence
        numbers, so the hot path counts nothing extra.
        """
        totals = dict(self._retired)
        for name, t in self._topics.items():
            family = name.split(".", 1)[0]
            totals[family] = totals.get(family, 0) + t.seq
        return totals

    # ------------------------------------------------------------------ rare events

    def add_listener(
        self, prefixes: tuple[str, ...], fn: Callable[[str, Event], None]
    ) -> Callable[[], None]:
        """Follow every event :meth:`emit` publishes on a topic under ``prefixes``, in-process.

        For hub components (the TWS front door) that need order, account, error and
        status events: they get the stamped event synchronously, in publish order, with
        nothing to lose (a SUB socket on our own PUB could be dropped at its high-water
        mark, and would need CURVE keys of its own). Ticks and bars never pass here:
        their streams have ``taps``. Returns a function that removes the listener.
        """
        entry = (prefixes, fn)
        self._listeners.append(entry)
        return lambda: self._listeners.remove(entry)

    def emit(self, topic: str, event: Event) -> None:
        """Publish a non-market event: next seq of ``topic``, hub time, last value, listeners.

        ``event`` is built with any ``seq``/``ts`` (0, 0); both are replaced here.
        """
        t = self.topic(topic)
        t.seq += 1
        stamped = msgspec.structs.replace(event, seq=t.seq, ts=time.time_ns())
        payload = encode(stamped)
        t.last = payload
        self.publisher.publish(t.key, payload)
        self._sync_after_sends()
        for prefixes, fn in self._listeners:
            if topic.startswith(prefixes):
                try:
                    fn(topic, stamped)
                except Exception:  # a listener's bug must not stop the hub's event flow
                    log.exception("event listener %r failed on %s", fn, topic)

    def status(self, state: str, kind: str, code: int, message: str, reconnect_count: int) -> None:
        self.emit(TOPIC_STATUS, HubStatus(0, 0, state, kind, code, message, reconnect_count))

    def error(self, lease: str, ib_code: int, message: str, explanation: str, topic: str) -> None:
        event = ErrorEvent(0, 0, lease, ib_code, message, explanation, topic)
        self.emit(TOPIC_ERROR + lease, event)

    # ------------------------------------------------------------------ snapshots

    def snapshot(self, topic: str) -> tuple[list[str], list[int], list[msgspec.Raw]]:
        """Last values of ``topic`` or, if no such topic has a value, of every topic under it.

        Reads the XPUB's waiting subscriptions first: the events after the snapshot
        reach a subscriber whose subscription arrived before its snapshot request.
        """
        self._sync()
        exact = self._topics.get(topic)
        if exact is not None and exact.last is not None:
            chosen = [exact]
        else:
            chosen = sorted(
                (t for n, t in self._topics.items() if n.startswith(topic) and t.last is not None),
                key=lambda t: t.name,
            )
        return (
            [t.name for t in chosen],
            [t.seq for t in chosen],
            [msgspec.Raw(t.last) for t in chosen if t.last is not None],
        )
