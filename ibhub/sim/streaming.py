"""Streaming market data: subscriptions, the timer loop and the wire encoding.

One task wakes every ``slice_seconds``, steps each active instrument as many times
as its rate says (``tick_rate`` events/s; a quote event sends bid and ask, a trade
sends last and volume), encodes the messages for every subscriber, and writes ONE
batch per client per slice. What makes it cheap enough for load tests:

* each subscription pre-encodes its message prefix (``1\\x006\\x00<reqId>\\x00``), and
  each event encodes its tail (tick type, price, size) once for all subscribers;
* flow control: a client whose socket buffer is full (``pause_writing``) is
  skipped, and an instrument whose every streaming reader is full does not step
  until one drains, so a slow reader never grows the simulator's memory;
* bursts after a stall are capped at 50 ms of events per slice.

Request handlers for reqMktData (1/2), tick-by-tick (97/98), real-time bars
(50/51) and historical data (20/25) live here too; the byte layout of streamed
messages is in :mod:`ibhub.sim.tickwire`, the bars in :mod:`ibhub.sim.history`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ibhub.sim import history, tickwire
from ibhub.sim.contracts import Instrument, parse_c12
from ibhub.sim.extra_ticks import ExtraTicks, parse_generic_ticks
from ibhub.sim.handlers import NO_SECURITY
from ibhub.sim.market import QUOTE, Walk
from ibhub.sim.replay import ReplayWalk
from ibhub.sim.session import ClientSession, Handler, RequestError

if TYPE_CHECKING:
    from ibhub.sim.server import SimGateway

__all__ = ["SimSubscription", "StreamEngine"]

log = logging.getLogger(__name__)

_pack = struct.Struct(">I").pack

MKT, TBT, RTBARS, HIST = "mkt", "tbt", "rtbars", "hist"
TBT_TYPES = {"Last": 1, "AllLast": 2, "BidAsk": 3, "MidPoint": 4}
MAX_TICKERS = "Max number of tickers has been reached"
REPLAY_CAP = 2000  # recorded ticks per instrument per slice at most (--speed max)
INLINE_HIST_BARS = 2000  # larger historical replies are built off the event loop


@dataclass(frozen=True, slots=True)
class SimSubscription:
    """A live streaming subscription, as tests and the hub's tests see it."""

    client_id: int
    req_id: int
    con_id: int
    symbol: str
    kind: str  # "mkt", "tbt", "rtbars", "hist"


class _Sub:
    __slots__ = ("bar", "con_id", "delayed", "extra", "hist", "inst", "kind", "plen",
                 "prefix", "req_id", "session", "slen", "sprefix", "tbt_type", "what")

    def __init__(self, session: ClientSession, req_id: int, inst: Instrument, kind: str) -> None:
        self.session = session
        self.req_id = req_id
        self.inst = inst
        self.con_id = inst.con_id
        self.kind = kind
        self.delayed = session.market_data_type in (3, 4)
        rid = str(req_id).encode()
        if kind == TBT:
            self.prefix = b"99\0" + rid + b"\0"
        else:
            self.prefix = b"1\x006\x00" + rid + b"\0"  # tickPrice
        self.sprefix = b"2\x006\x00" + rid + b"\0"  # tickSize
        self.plen = len(self.prefix)
        self.slen = len(self.sprefix)
        self.tbt_type = 0
        self.what = "TRADES"
        self.bar: list[float] | None = None  # rt bars: open, high, low, close, vol, pv, count
        self.hist: history.HistRequest | None = None
        self.extra: ExtraTicks | None = None  # option greeks, generic ticks (mkt only)

    def public(self) -> SimSubscription:
        return SimSubscription(self.session.client_id, self.req_id, self.con_id,
                               self.inst.symbol, self.kind)


class StreamEngine:
    """Owns every streaming subscription and the timer that feeds them."""

    def __init__(self, gateway: SimGateway) -> None:
        self.gateway = gateway
        self.config = gateway.config
        self.market = gateway.market
        self._rate = float(self.config.tick_rate)
        self._subs: dict[tuple[ClientSession, int], _Sub] = {}
        self._by_con: dict[int, list[_Sub]] = {}
        self._acc: dict[int, float] = {}
        self._last_ts: dict[int, int] = {}
        self._halts: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._bar_boundary = 0.0
        self._hist_second = 0
        self.events = 0  # market events stepped since start (for benchmarks)
        self.messages = 0  # streamed messages written

    # -- public state --------------------------------------------------------
    def handlers(self) -> dict[int, Handler]:
        return {1: self.req_mkt_data, 2: self.cancel_mkt_data, 97: self.req_tick_by_tick,
                98: self.cancel_tick_by_tick, 50: self.req_real_time_bars,
                51: self.cancel_real_time_bars, 20: self.req_historical_data,
                25: self.cancel_historical_data, 87: history.req_head_timestamp,
                90: _ignore}

    def subscriptions(self) -> list[SimSubscription]:
        return [s.public() for s in self._subs.values()]

    def lines_in_use(self) -> int:
        return sum(1 for s in self._subs.values() if s.kind in (MKT, TBT))

    def set_tick_rate(self, hz: float) -> None:
        if hz < 0:
            raise ValueError(f"tick rate must be >= 0, got {hz}")
        self._rate = float(hz)

    @property
    def tick_rate(self) -> float:
        return self._rate

    @property
    def halted(self) -> bool:
        return bool(self._halts)

    def halt(self, reason: str) -> None:
        self._halts.add(reason)

    def resume(self, reason: str) -> None:
        self._halts.discard(reason)

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sim-stream")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self.drop_all()

    def _add(self, sub: _Sub) -> None:
        self._subs[(sub.session, sub.req_id)] = sub
        self._by_con.setdefault(sub.con_id, []).append(sub)
        self.market.acquire(sub.con_id)
        if sub.extra is not None and sub.extra.option:
            # the underlying walks while its option is watched: greeks follow it
            self.market.acquire(sub.inst.under_con_id)

    def _remove(self, sub: _Sub) -> None:
        if self._subs.pop((sub.session, sub.req_id), None) is None:
            return
        subs = self._by_con.get(sub.con_id)
        if subs is not None:
            subs.remove(sub)
            if not subs:
                del self._by_con[sub.con_id]
        self.market.release(sub.con_id)
        if sub.extra is not None and sub.extra.option:
            self.market.release(sub.inst.under_con_id)

    def _cancel(self, session: ClientSession, req_id: int, kinds: tuple[str, ...]) -> bool:
        sub = self._subs.get((session, req_id))
        if sub is None or sub.kind not in kinds:
            log.debug("client %d cancelled unknown %s request %d", session.client_id,
                      "/".join(kinds), req_id)
            return False
        self._remove(sub)
        return True

    def drop_session(self, session: ClientSession) -> None:
        for sub in [s for s in self._subs.values() if s.session is session]:
            self._remove(sub)

    def drop_all(self) -> None:
        for sub in list(self._subs.values()):
            self._remove(sub)

    # -- request helpers -------------------------------------------------------
    def _instrument(self, fields: list[str], offset: int) -> Instrument:
        query = parse_c12(fields, offset)
        found = self.gateway.universe.resolve(query)
        if len(found) == 1:
            return found[0]
        if found:
            raise RequestError(200, f"The contract description specified for {query.symbol} "
                                    "is ambiguous.")
        raise RequestError(200, NO_SECURITY)

    def _check_new(self, session: ClientSession, req_id: int, line: bool) -> None:
        if (session, req_id) in self._subs:
            raise RequestError(322, "Error processing request.-'bW' : cause - Duplicate "
                                    f"ticker id {req_id}")
        if line and self.lines_in_use() >= self.config.max_lines:
            log.info("client %d: market data line limit %d reached (reqId %d)",
                     session.client_id, self.config.max_lines, req_id)
            raise RequestError(101, MAX_TICKERS)

    # -- reqMktData ----------------------------------------------------------------
    def req_mkt_data(self, s: ClientSession, f: list[str]) -> None:
        """[1, 11, reqId, C12, (BAG legs), dnc, [dnc x3], genericTicks, snapshot, regSnap, opts]."""
        req_id = int(f[2])
        inst = self._instrument(f, 3)
        idx = 15
        if f[5].upper() == "BAG":
            idx += 1 + 4 * int(f[15])
        if idx < len(f) and f[idx] == "1":
            idx += 3
        idx += 1
        generic = f[idx] if idx < len(f) else ""
        snapshot = idx + 1 < len(f) and f[idx + 1] == "1"
        regulatory = idx + 2 < len(f) and f[idx + 2] == "1"
        try:
            ids = parse_generic_ticks(generic, inst)
        except ValueError as exc:
            raise RequestError(321, f"Error validating request.-'bN' : cause - {exc}") from None
        self._check_new(s, req_id, line=not (snapshot or regulatory))
        sub = _Sub(s, req_id, inst, MKT)
        walk = self.market.walk(inst.con_id)
        s.write_raw(tickwire.initial_block(inst, walk, req_id, sub.delayed))
        if ExtraTicks.wanted(inst, ids):
            sub.extra = ExtraTicks(self.market, self.gateway.universe, inst, req_id, ids,
                                   sub.delayed)
            s.write_raw(sub.extra.initial(walk))
        if snapshot or regulatory:
            s.send(57, 1, req_id)
            return
        self._add(sub)

    def cancel_mkt_data(self, s: ClientSession, f: list[str]) -> None:
        self._cancel(s, int(f[2]), (MKT,))

    # -- tick-by-tick ----------------------------------------------------------------
    def req_tick_by_tick(self, s: ClientSession, f: list[str]) -> None:
        """[97, reqId, C12, tickType, numberOfTicks, ignoreSize]."""
        req_id = int(f[1])
        inst = self._instrument(f, 2)
        kind = TBT_TYPES.get(f[14])
        if kind is None:
            raise RequestError(321, f"Error validating request.-'97' : cause - unknown "
                                    f"tick-by-tick type {f[14]!r} (Last, AllLast, BidAsk, "
                                    "MidPoint)")
        if kind in (1, 2) and not inst.trades:
            raise RequestError(10189, f"Failed to request tick-by-tick data. {inst.symbol} "
                                      "has no trades; use BidAsk or MidPoint")
        self._check_new(s, req_id, line=True)
        sub = _Sub(s, req_id, inst, TBT)
        sub.tbt_type = kind
        self._add(sub)

    def cancel_tick_by_tick(self, s: ClientSession, f: list[str]) -> None:
        self._cancel(s, int(f[1]), (TBT,))

    # -- real-time bars ----------------------------------------------------------------
    def req_real_time_bars(self, s: ClientSession, f: list[str]) -> None:
        """[50, 3, reqId, C12, barSize, whatToShow, useRTH, options]."""
        req_id = int(f[2])
        inst = self._instrument(f, 3)
        if f[15] not in ("5", ""):
            raise RequestError(321, "Error validating request.-'50' : cause - real-time bars "
                                    f"are 5 seconds only, not {f[15]!r}")
        what = (f[16] or "TRADES").upper()
        if what not in ("TRADES", "MIDPOINT", "BID", "ASK"):
            raise RequestError(321, f"Error validating request.-'50' : cause - whatToShow "
                                    f"{what!r} is not TRADES, MIDPOINT, BID or ASK")
        if what == "TRADES" and not inst.trades:
            raise RequestError(420, f"Invalid Real-time Query:No data of type TRADES for "
                                    f"{inst.local_symbol}; use MIDPOINT")
        self._check_new(s, req_id, line=False)
        sub = _Sub(s, req_id, inst, RTBARS)
        sub.what = what
        self._add(sub)

    def cancel_real_time_bars(self, s: ClientSession, f: list[str]) -> None:
        self._cancel(s, int(f[2]), (RTBARS,))

    # -- historical data ------------------------------------------------------------------
    def req_historical_data(self, s: ClientSession, f: list[str]) -> None:
        """Small requests are answered inline; large ones (thousands of bars, tens of
        ms of CPU) are built in a worker thread so streaming to everyone else goes on."""
        req_id = int(f[1])
        inst = self._instrument(f, 2)
        req = history.parse_request(f, inst)
        if history.naive_time(f[15]):
            s.send_error(req_id, history.IMPLIED_ZONE_CODE, history.IMPLIED_ZONE_TEXT)
        if req.keep_up_to_date:
            self._check_new(s, req_id, line=False)
        if history.estimated_bars(req) <= INLINE_HIST_BARS:
            s.write_raw(history.reply(req_id, inst, req, self.market.seed,
                                      self.config.max_hist_bars))
            self._after_history(s, req_id, inst, req)
        else:
            self.gateway.spawn(self._history_in_thread(s, req_id, inst, req))

    async def _history_in_thread(self, s: ClientSession, req_id: int, inst: Instrument,
                                 req: history.HistRequest) -> None:
        try:
            data = await asyncio.to_thread(history.reply, req_id, inst, req, self.market.seed,
                                           self.config.max_hist_bars)
        except RequestError as exc:
            s.send_error(req_id, exc.code, exc.message)
            return
        except Exception:
            log.exception("historical request %d of client %d failed", req_id, s.client_id)
            s.send_error(req_id, 162, "Historical Market Data Service error message:"
                                      "internal simulator error (see its log)")
            return
        if not s.closed:
            s.write_raw(data)
            self._after_history(s, req_id, inst, req)

    def _after_history(self, s: ClientSession, req_id: int, inst: Instrument,
                       req: history.HistRequest) -> None:
        if req.keep_up_to_date and (s, req_id) not in self._subs:
            sub = _Sub(s, req_id, inst, HIST)
            sub.hist = req
            self._add(sub)

    def cancel_historical_data(self, s: ClientSession, f: list[str]) -> None:
        self._cancel(s, int(f[2]), (HIST,))

    # -- the timer loop --------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.config.slice_seconds
        last = loop.time()
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            dt, last = now - last, now
            if self._halts:
                continue
            try:
                self._slice(dt)
                self._timed_bars()
            except Exception:
                log.exception("streaming slice failed; continuing")

    def _slice(self, dt: float) -> None:
        rate = self._rate
        market = self.market
        clock = market.clock
        if clock is not None:  # replaying a recording: its ticks, at their times
            horizon = clock.horizon()
            if horizon == -math.inf or not market.active:
                return
        elif rate <= 0 or not market.active:
            return
        stamp = str(time.time_ns() // 1000).encode() if self.config.stamp_sizes else None
        now_s = int(time.time())
        outs: dict[ClientSession, list[bytes]] = {}
        by_con = self._by_con
        acc = self._acc
        listeners = bool(market._listeners)
        cap = int(rate * 0.05) + 1
        events = 0
        for con_id in list(market.active):
            subs = by_con.get(con_id)
            if subs and _all_blocked(subs):
                # flow control: every reader of this instrument is behind, so the
                # walk waits for them instead of producing ticks nobody can take
                acc[con_id] = 0.0
                continue
            if clock is not None:
                w = market.walk(con_id)
                n = w.due(horizon, REPLAY_CAP) if isinstance(w, ReplayWalk) else 0
                if n == 0:
                    continue
            else:
                a = acc.get(con_id, 0.0) + rate * dt
                n = int(a)
                acc[con_id] = a - n
                if n == 0:
                    continue
                if n > cap:
                    n = cap
                w = market.walk(con_id)
            events += n
            for _ in range(n):
                ev = w.step()
                if listeners:
                    market.notify(w)
                if subs:
                    self._emit(w, ev, subs, outs, stamp, now_s)
        self.events += events
        for session, parts in outs.items():
            if parts:
                session.write_raw(b"".join(parts))

    def _emit(self, w: Walk, ev: int, subs: list[_Sub], outs: dict[ClientSession, list[bytes]],
              stamp: bytes | None, now_s: int) -> None:
        """Append this event's messages for every subscriber of the instrument."""
        tails: dict[bool, tuple[bytes, ...]] = {}
        stamp_ts = False
        if ev != QUOTE and self._last_ts.get(w.con_id) != now_s:
            self._last_ts[w.con_id] = now_s
            stamp_ts = True
        count = 0
        for sub in subs:
            kind = sub.kind
            if kind == RTBARS:
                _bar_update(sub, w, ev)
                continue
            if kind == HIST:
                continue
            session = sub.session
            if session.paused or session.closed:
                continue
            parts = outs.get(session)
            if parts is None:
                parts = outs[session] = []
            if kind == MKT:
                t = tails.get(sub.delayed)
                if t is None:
                    t = tails[sub.delayed] = tickwire.mkt_tails(w, ev, sub.delayed, stamp)
                p, pl = sub.prefix, sub.plen
                if ev == QUOTE:
                    parts += (_pack(pl + len(t[0])), p, t[0], _pack(pl + len(t[1])), p, t[1])
                else:
                    sp = sub.sprefix
                    parts += (_pack(pl + len(t[0])), p, t[0],
                              _pack(sub.slen + len(t[1])), sp, t[1])
                    if stamp_ts:
                        body = b"46\x006\x00" + str(sub.req_id).encode() + \
                            (b"\x0088\x00" if sub.delayed else b"\x0045\x00") + \
                            str(now_s).encode() + b"\0"
                        parts += (_pack(len(body)), body)
                        count += 1
                if sub.extra is not None:
                    more = sub.extra.on_event(w, ev)
                    if more:
                        parts.append(more)
                count += 2
            else:  # TBT
                tail = tickwire.tbt_tail(w, ev, sub.tbt_type, now_s)
                if tail is not None:
                    parts += (_pack(sub.plen + len(tail)), sub.prefix, tail)
                    count += 1
        self.messages += count

    def _timed_bars(self) -> None:
        """Real-time bars at each bar boundary; keepUpToDate updates once a second."""
        now = time.time()
        period = self.config.rt_bar_seconds
        boundary = now - now % period
        if boundary > self._bar_boundary:
            first = self._bar_boundary == 0.0
            self._bar_boundary = boundary
            if not first:
                self._send_rt_bars(int(boundary - period))
        second = int(now)
        if second != self._hist_second:
            self._hist_second = second
            self._send_hist_updates(now)

    def _send_rt_bars(self, bar_time: int) -> None:
        for sub in list(self._subs.values()):
            if sub.kind != RTBARS or sub.session.closed:
                continue
            w = self.market.walk(sub.con_id)
            bar = sub.bar
            if bar is None:
                px = tickwire.bar_price(sub.what, w)
                bar = [px, px, px, px, 0.0, 0.0, 0.0]
            o, h, lo, c, vol, pv, count = bar
            wap = round(pv / vol, w.decimals + 2) if vol else c
            sub.session.send(50, 3, sub.req_id, bar_time, o, h, lo, c,
                             vol if sub.what == "TRADES" else -1.0, wap, int(count))
            sub.bar = None

    def _send_hist_updates(self, now: float) -> None:
        for sub in list(self._subs.values()):
            if sub.kind != HIST or sub.session.closed or sub.hist is None:
                continue
            fields = history.update_fields(sub.req_id, sub.inst, sub.hist, self.market.seed, now)
            if fields is not None:
                sub.session.send(*fields)


def _all_blocked(subs: list[_Sub]) -> bool:
    """True when every streaming subscriber's socket buffer is full (and there is one)."""
    blocked = False
    for sub in subs:
        if sub.kind in (MKT, TBT):
            if not sub.session.paused:
                return False
            blocked = True
        elif sub.kind == RTBARS:
            return False
    return blocked


def _ignore(s: ClientSession, f: list[str]) -> None:
    """cancelHeadTimeStamp: the head timestamp is answered at once, nothing to cancel."""


def _bar_update(sub: _Sub, w: Walk, ev: int) -> None:
    if sub.what == "TRADES":
        if ev == QUOTE:
            return
    elif ev != QUOTE:
        return
    px = tickwire.bar_price(sub.what, w)
    bar = sub.bar
    if bar is None:
        sub.bar = [px, px, px, px, 0.0, 0.0, 0.0]
        bar = sub.bar
    if px > bar[1]:
        bar[1] = px
    if px < bar[2]:
        bar[2] = px
    bar[3] = px
    if ev != QUOTE:
        bar[4] += w.last_size
        bar[5] += w.last_size * px
    bar[6] += 1
