"""Market data through the front door: the hub's shared, ref-counted lines.

``reqMktData`` resolves the contract and joins the line through the hub's
market-data service (:class:`~ibhub.hub.market_data.MarketDataService`), the same
one ZeroMQ subscribers' requests use: however many scripts (of either kind) watch an
instrument, the Gateway sees one line. Each downstream request is one holder
(``tws:<connection>:<reqId>``) of the subscription, so ``cancelMktData`` or a
disconnect releases exactly what that request took, and the line is cancelled
upstream when its last holder of any kind goes.

Ticks: a :class:`LineTap` sits in the line's ``TickStream.taps`` and sees every
upstream tickPrice/tickSize as parsed numbers. It encodes the message tail
(type, price, size, attributes) once per tick and prefixes it per downstream
request with that connection's own reqId, so a tick costs one format plus one
``transport.write`` per script. Real-time bars (``reqRealTimeBars``, 5 s TRADES,
the hub's bar lines) work the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ibhub.frontdoor import depth, tick_by_tick
from ibhub.frontdoor.contracts import spec_from_query
from ibhub.frontdoor.requests import UNSUPPORTED, unsupported_text
from ibhub.frontdoor.session import DownstreamSession, Handler
from ibhub.hub.subscriptions import BAR_WHATS, LineLimit, NotSubscribed, Subscription
from ibhub.protocol import ContractInfo, Error
from ibhub.tasks import TaskSet
from ibhub.tws.codec import fmt_float
from ibhub.tws.contracts import parse_c12

if TYPE_CHECKING:
    from ibhub.frontdoor.server import FrontDoor

log = logging.getLogger(__name__)

_LEN = struct.Struct(">I")
SNAPSHOT_WAIT: Final = 11.0  # seconds, as IB's snapshot: then tickSnapshotEnd regardless
#: tickString types a Gateway sends on every reqMktData line without a generic tick list:
#: bid/ask exchange (32, 33), last timestamp (45), last exchange (84). The hub's line
#: carries them; the front door relays them from the upstream socket (tap on 46).


#: live tick type -> its delayed twin (tickPrice, tickSize, tickString 45, and the
#: option computations), for scripts that asked reqMarketDataType(3 or 4)
DELAYED_TYPE: Final = {1: 66, 2: 67, 4: 68, 6: 72, 7: 73, 9: 75, 14: 76, 0: 69, 3: 70,
                       5: 71, 8: 74, 45: 88, 10: 80, 11: 81, 12: 82, 13: 83}
#: IB's "not computed" marker per tickOptionComputation value (NaN in the hub)
_NOT_COMPUTED: Final = (-1.0, -2.0, -1.0, -1.0, -2.0, -2.0, -2.0, -1.0)


class LineTap:
    """One line's downstream readers; sits in ``TickStream.taps`` / ``BarStream.taps``.

    A reader that asked for delayed data (``reqMarketDataType`` 3/4) gets the line's
    ticks under the delayed tick types; the hub's line is one upstream request for
    every reader, so it carries whatever the hub's session receives.
    """

    __slots__ = ("_delayed", "_outs", "outs")

    def __init__(self) -> None:
        self.outs: dict[tuple[DownstreamSession, int], tuple[bytes, bytes, bool]] = {}
        self._outs: list[tuple[DownstreamSession, bytes, bytes]] = []  # live readers
        self._delayed: list[tuple[DownstreamSession, bytes, bytes]] = []

    def add(self, s: DownstreamSession, rid: int, kind: str, delayed: bool = False) -> None:
        if kind.startswith("bars"):
            self.outs[(s, rid)] = (b"50\x003\x00%d\x00" % rid, b"", False)
        else:
            self.outs[(s, rid)] = (b"1\x006\x00%d\x00" % rid, b"2\x006\x00%d\x00" % rid,
                                   delayed)
        self._rebuild()

    def remove(self, s: DownstreamSession, rid: int) -> None:
        self.outs.pop((s, rid), None)
        self._rebuild()

    def _rebuild(self) -> None:
        self._outs = [(s, p, z) for (s, _), (p, z, d) in self.outs.items() if not d]
        self._delayed = [(s, p, z) for (s, _), (p, z, d) in self.outs.items() if d]

    def price(self, tick_type: int, price: float, size: float) -> None:
        pack = _LEN.pack
        p, z = fmt_float(price).encode(), fmt_float(size).encode()
        if self._outs:  # the common case: live readers only, one format per tick
            tail = b"%d\0%s\0%s\x000\0" % (tick_type, p, z)
            n = len(tail)
            for s, prefix, _ in self._outs:
                if not s.paused:
                    s.write(pack(len(prefix) + n) + prefix + tail)
        if self._delayed:
            tail = b"%d\0%s\0%s\x000\0" % (DELAYED_TYPE.get(tick_type, tick_type), p, z)
            n = len(tail)
            for s, prefix, _ in self._delayed:
                if not s.paused:
                    s.write(pack(len(prefix) + n) + prefix + tail)

    def size(self, tick_type: int, size: float) -> None:
        pack = _LEN.pack
        z = fmt_float(size).encode()
        if self._outs:
            tail = b"%d\0%s\0" % (tick_type, z)
            n = len(tail)
            for s, _, prefix in self._outs:
                if not s.paused:
                    s.write(pack(len(prefix) + n) + prefix + tail)
        if self._delayed:
            tail = b"%d\0%s\0" % (DELAYED_TYPE.get(tick_type, tick_type), z)
            n = len(tail)
            for s, _, prefix in self._delayed:
                if not s.paused:
                    s.write(pack(len(prefix) + n) + prefix + tail)

    def greeks(self, tick_type: int, attrib: int, values: tuple[float, ...]) -> None:
        """tickOptionComputation (21): ``21, reqId, type, attrib, 8 values``."""
        text = b"\0".join(
            fmt_float(m if math.isnan(v) else v).encode()
            for v, m in zip(values, _NOT_COMPUTED, strict=True))
        self._each(lambda rid, typ: b"21\0%d\0%d\0%d\0%s\0" % (rid, typ, attrib, text),
                   tick_type)

    def generic(self, tick_type: int, value: float) -> None:
        """tickGeneric (45): volatilities, shortable, ..."""
        v = fmt_float(value).encode()
        self._each(lambda rid, typ: b"45\x006\0%d\0%d\0%s\0" % (rid, typ, v), tick_type)

    def string(self, tick_type: int, value: bytes) -> None:
        """tickString (46): the last trade's time, RTVolume, dividends, ..."""
        self._each(lambda rid, typ: b"46\x006\0%d\0%d\0%s\0" % (rid, typ, value), tick_type)

    def _each(self, body: Any, tick_type: int) -> None:
        """Rare messages (not per quote): built per reader with its own reqId."""
        pack = _LEN.pack
        for (s, rid), (_, _, delayed) in list(self.outs.items()):
            if not s.paused:
                msg = body(rid, DELAYED_TYPE.get(tick_type, tick_type) if delayed else tick_type)
                s.write(pack(len(msg)) + msg)

    def bar(self, time_: int, open_: float, high: float, low: float, close: float,
            volume: float, wap: float, count: int) -> None:
        f = fmt_float
        tail = "\0".join((str(time_), f(open_), f(high), f(low), f(close), f(volume),
                          f(wap), str(count), "")).encode()
        n = len(tail)
        pack = _LEN.pack
        for s, prefix, _ in self._outs:
            if not s.paused:
                s.write(pack(len(prefix) + n) + prefix + tail)


@dataclass(slots=True)
class Line:
    """One downstream request's hold on a hub line."""

    holder: str
    sub: Subscription
    tap: LineTap | depth.DepthTap | tick_by_tick.TbtTap
    kind: str


class MarketData:
    def __init__(self, door: FrontDoor) -> None:
        self._door = door
        self._tasks = TaskSet(log)
        self._depth_exchanges = depth.DepthExchanges(door)

    def handlers(self) -> dict[int, Handler]:
        return {1: self.req_mkt_data, 2: self.cancel, 50: self.req_real_time_bars,
                51: self.cancel, 10: self.req_mkt_depth, 11: self.cancel,
                82: self._depth_exchanges.request, 97: self.req_tick_by_tick,
                98: self.cancel_tick_by_tick, 59: self.req_market_data_type}

    async def req_tick_by_tick(self, s: DownstreamSession, f: list[str]) -> None:
        await tick_by_tick.request(self, self._door.passthrough, s, f)

    def cancel_tick_by_tick(self, s: DownstreamSession, f: list[str]) -> None:
        """[98, reqId]: a shared line's holder lets go; else a passed-through request."""
        rid = int(f[1])
        line = s.lines.pop(rid, None)
        if line is not None:
            self._release(s, rid, line)
        else:
            self._door.passthrough.cancel(s, f)

    async def req_mkt_depth(self, s: DownstreamSession, f: list[str]) -> None:
        await depth.req_mkt_depth(self, s, f)

    def stop(self) -> None:
        self._tasks.cancel()

    # ------------------------------------------------------------------ requests

    async def req_mkt_data(self, s: DownstreamSession, f: list[str]) -> None:
        rid = int(f[2])
        q = parse_c12(f, 3)
        if q.sec_type == "BAG":
            s.send_error(rid, UNSUPPORTED, unsupported_text(1, "combo (BAG) market data"))
            return
        pos = 15
        if f[pos] == "1":
            pos += 3  # delta-neutral contract
        snapshot = f[pos + 2] == "1" or f[pos + 3] == "1"
        generic = generic_tick_list(f[pos + 1])
        if generic is None:
            s.send_error(rid, 321, "Error validating request.-'bN' : cause - Incorrect generic "
                                   f"tick list of {f[pos + 1]!r} (ibhub: comma-separated tick "
                                   "ids or mdoff)")
            return
        # a generic tick list is part of what a line carries: scripts asking for the same
        # list share a line ("ticks+<list>"), the plain line is the hub's own
        kind = f"ticks+{generic}" if generic else "ticks"
        delayed = s.market_data_type in (3, 4)
        line = await self._join(s, rid, q, kind, delayed=delayed)
        if line is None:
            return
        info = line.sub.contract
        stream = line.sub.stream
        s.send(81, rid, info.min_tick or 0.01, "", 3)  # tickReqParams
        # marketDataType: as the script asked, or delayed when the hub's own session is
        # (its lines then carry the delayed tick ids for every reader)
        hub_delayed = self._door.hub.settings.market_data_type in (3, 4)
        s.send(58, 1, rid, 3 if delayed or hub_delayed else 1)
        self._initial(s, rid, stream, delayed)
        if snapshot:
            self._tasks.spawn(self._snapshot(s, rid, stream))

    async def req_real_time_bars(self, s: DownstreamSession, f: list[str]) -> None:
        """[50, 3, reqId, C12, barSize, whatToShow, useRTH, options]: the bars of exactly
        that whatToShow, on the hub's shared bar line of that kind (``bars.<WHAT>``);
        forex has no TRADES bars, so TRADES on CASH is the Gateway's error 420, never
        MIDPOINT bars under a TRADES label."""
        rid = int(f[2])
        q = parse_c12(f, 3)
        what = (f[16] if len(f) > 16 else "").upper() or "TRADES"
        if f[15] not in ("5", ""):
            s.send_error(rid, 321, f"Error validating request.-'50' : cause - real-time bars "
                                   f"are 5 seconds only, not {f[15]!r}")
            return
        if what not in BAR_WHATS:
            s.send_error(rid, 321, f"Error validating request.-'50' : cause - whatToShow "
                                   f"{what!r} is not one of {', '.join(BAR_WHATS)}")
            return
        if what == "TRADES" and q.sec_type == "CASH":
            s.send_error(rid, 420, f"Invalid Real-time Query:No data of type TRADES for "
                                   f"{q.local_symbol or q.symbol + '.' + q.currency}; forex "
                                   "has MIDPOINT, BID and ASK bars")
            return
        await self._join(s, rid, q, f"bars.{what}")

    def req_market_data_type(self, s: DownstreamSession, f: list[str]) -> None:
        """[59, 1, type]: 1 live, 2 frozen, 3 delayed, 4 delayed frozen. Requests from now
        on get their ticks under the asked type's tick ids and that ``marketDataType``;
        the values are the hub line's (frozen is live here: lines stream all day)."""
        kind = int(f[2])
        if kind not in (1, 2, 3, 4):
            s.send_error(-1, 321, f"Error validating request.-'59' : cause - market data "
                                  f"type {kind} is not 1, 2, 3 or 4")
            return
        s.market_data_type = kind

    def cancel(self, s: DownstreamSession, f: list[str]) -> None:
        rid = int(f[2])
        line = s.lines.pop(rid, None)
        if line is not None:
            self._release(s, rid, line)

    # ------------------------------------------------------------------ lines

    async def join(self, s: DownstreamSession, rid: int, q: Any, kind: str,
                   tap_for: Callable[[Any], Any]) -> Line | None:
        """:meth:`_join` with the caller's own taps: ``tap_for(stream)`` returns the tap
        this request reads through, already in ``stream.taps`` (depth, tick-by-tick)."""
        return await self._join(s, rid, q, kind, tap_for)

    async def _join(self, s: DownstreamSession, rid: int, q: Any, kind: str,
                    tap_for: Callable[[Any], Any] | None = None,
                    delayed: bool = False) -> Line | None:
        hub = self._door.hub
        if rid in s.lines:
            s.send_error(rid, 322, f"Error processing request: duplicate ticker id {rid}")
            return None
        resolved = await hub.market.resolve_one(0, spec_from_query(q))
        if isinstance(resolved, Error):
            s.send_error(rid, 200, f"No security definition has been found for the request "
                                   f"(ibhub: {resolved.message})")
            return None
        if s.closed:
            return None
        info: ContractInfo = resolved
        self._door.contracts[info.con_id] = info
        holder = f"{s.lease}:{rid}"
        try:
            sub, created = hub.market.open_line(holder, info, kind, pace=False)
        except LineLimit as exc:
            if kind == "depth":  # the Gateway's answer beyond the account's depth budget
                s.send_error(rid, 309, f"Max number ({hub.market.depth.lines_max}) of market "
                                       f"depth requests has been reached (ibhub: {exc})")
            else:
                s.send_error(rid, 101, f"Max number of tickers has been reached (ibhub: {exc})")
            return None
        if tap_for is not None:
            tap = tap_for(sub.stream)
        else:
            tap = _tap_of(sub.stream)
            tap.add(s, rid, kind, delayed)
        line = s.lines[rid] = Line(holder, sub, tap, kind)
        if created:
            log.info("subscribed %s upstream for tws client %d", sub.topic, s.client_id)
        return line

    def _release(self, s: DownstreamSession, rid: int, line: Line) -> None:
        hub = self._door.hub
        line.tap.remove(s, rid)
        stream = line.sub.stream
        if not line.tap.outs:
            stream.taps = tuple(t for t in stream.taps if t is not line.tap)
        with contextlib.suppress(NotSubscribed):
            hub.market.release(line.holder, line.sub.topic)

    def release_all(self, s: DownstreamSession) -> None:
        lines, s.lines = s.lines, {}
        for rid, line in lines.items():
            self._release(s, rid, line)

    def _initial(self, s: DownstreamSession, rid: int, stream: Any, delayed: bool) -> None:
        """The line's current top of book, session prices and model greeks, as a new IB
        subscriber gets them at once."""
        def typ(t: int) -> int:
            return DELAYED_TYPE.get(t, t) if delayed else t

        for tick_type, price, size in ((1, stream.bid, stream.bid_size),
                                       (2, stream.ask, stream.ask_size),
                                       (4, stream.last, stream.last_size),
                                       (6, stream.high, 0.0), (7, stream.low, 0.0),
                                       (9, stream.close, 0.0), (14, stream.open, 0.0)):
            if math.isfinite(price):
                s.send(1, 6, rid, typ(tick_type), price,
                       size if math.isfinite(size) else 0.0, 0)
        if math.isfinite(stream.volume):
            s.send(2, 6, rid, typ(8), stream.volume)
        if stream.greeks_ is not None:
            s.send(21, rid, typ(13), 1, *(m if math.isnan(v) else v for v, m in
                                          zip(stream.greeks_, _NOT_COMPUTED, strict=True)))

    async def _snapshot(self, s: DownstreamSession, rid: int, stream: Any) -> None:
        """snapshot=1: the current values (waiting for the first if the line is new),
        then tickSnapshotEnd, and the request lets go of the line."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SNAPSHOT_WAIT):
                while not (math.isfinite(stream.bid) or math.isfinite(stream.last)):
                    await asyncio.sleep(0.01)
        line = s.lines.pop(rid, None)
        if line is not None:
            self._release(s, rid, line)
        s.send(57, 1, rid)

    # ------------------------------------------------------------------ errors

    def on_line_error(self, topic: str, event: Any) -> None:
        """An IB error on a line (routed by the hub to its holders): to that reqId."""
        # topic: error.tws:<connection>:<reqId>
        try:
            _, number, rid = event.lease.rsplit(":", 2)
            number_i, rid_i = int(number), int(rid)
        except (AttributeError, ValueError):
            return
        for s in self._door.sessions:
            if s.number == number_i and rid_i in s.lines:
                s.send_error(rid_i, event.ib_code, event.message)
                return


def generic_tick_list(text: str) -> str | None:
    """A request's genericTickList, normalised (sorted, unique) so that equal lists share
    a line; None if it is not comma-separated tick ids or ``mdoff``. It goes onto the
    Gateway's wire, so nothing else passes."""
    items = {t.strip() for t in text.split(",")} - {""}
    if len(items) > 32 or any(not (t.isascii() and t.isdigit() and len(t) <= 4)
                              and t != "mdoff" for t in items):
        return None
    return ",".join(sorted(items, key=lambda t: (not t.isdigit(), int(t) if t.isdigit() else 0)))


def _tap_of(stream: Any) -> LineTap:
    for tap in stream.taps:
        if isinstance(tap, LineTap):
            return tap
    tap = LineTap()
    stream.taps = (*stream.taps, tap)
    return tap
