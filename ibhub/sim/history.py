"""Historical bars: a deterministic price path that is a pure function of time.

The live walk (:mod:`ibhub.sim.market`) is a sequence of steps, so it cannot answer
"what was the price last Tuesday at 10:15". History instead uses value noise: the
log price at time ``t`` is a sum of octaves (scales 1 s .. 2**24 s), each a linear
interpolation between pseudo-random lattice values keyed by ``(seed, conId,
octave, lattice index)``. Amplitudes grow with the square root of the scale, which
makes the path look like a random walk at every bar size, and because every bar
reads the same function, 1-minute and daily bars agree, overlapping requests
return identical bars, and keepUpToDate updates (message 90) continue the series.

Sessions: with useRTH=1 stocks and options have bars only 09:30-16:00 US/Eastern on
weekdays (other types: weekdays); with useRTH=0 intraday bars cover every hour.
Daily, weekly and monthly bars skip weekends. Durations in D/W/M/Y count trading
days for daily bars and for useRTH=1.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from ibhub.sim.contracts import Instrument, parse_c12
from ibhub.sim.market import stable_seed
from ibhub.sim.session import RequestError
from ibhub.tws.codec import frame_payload, pack_len

if TYPE_CHECKING:
    from ibhub.sim.session import ClientSession

__all__ = ["HistRequest", "PricePath", "estimated_bars", "parse_request", "reply",
           "req_head_timestamp", "update_fields"]

log = logging.getLogger(__name__)

DAY = 86400
_UNIT_SECONDS = {"sec": 1, "secs": 1, "min": 60, "mins": 60, "hour": 3600, "hours": 3600,
                 "day": DAY, "days": DAY, "week": 7 * DAY, "weeks": 7 * DAY,
                 "month": 30 * DAY, "months": 30 * DAY}
VALID_BAR_SIZES = frozenset({1, 5, 10, 15, 30, 60, 120, 180, 300, 600, 900, 1200, 1800,
                             3600, 7200, 10800, 14400, 28800, DAY, 7 * DAY, 30 * DAY})
_DURATION_RE = re.compile(r"^\s*(\d+)\s*([SDWMY])\s*$")
_TRADING_DAYS = {"D": 1, "W": 5, "M": 21, "Y": 252}
_CAL_SECONDS = {"S": 1, "D": DAY, "W": 7 * DAY, "M": 30 * DAY, "Y": 365 * DAY}
_WHAT = {"TRADES", "MIDPOINT", "BID", "ASK", "BID_ASK", "ADJUSTED_LAST"}
_ANNUAL_VOL = {"STK": 0.30, "FUT": 0.18, "CASH": 0.08, "OPT": 0.90}
_OCTAVES = 25
_M64 = (1 << 64) - 1
_UTC = dt.UTC


def _hist_error(text: str) -> RequestError:
    return RequestError(162, f"Historical Market Data Service error message:{text}")


def _invalid(text: str) -> RequestError:
    return RequestError(321, f"Error validating request.-'bX' : cause - {text}")


@dataclass(frozen=True, slots=True)
class HistRequest:
    end: float  # epoch seconds
    bar_seconds: int
    duration_n: int
    duration_unit: str  # S D W M Y
    use_rth: bool
    what: str
    format_date: int
    keep_up_to_date: bool


def estimated_bars(req: HistRequest) -> int:
    """About how many bars a request yields (an upper bound, for scheduling)."""
    total = req.duration_n * _CAL_SECONDS[req.duration_unit]
    return int(total // req.bar_seconds) + 1


def parse_bar_size(text: str) -> int:
    parts = text.strip().lower().split()
    if len(parts) != 2 or not parts[0].isdigit() or parts[1] not in _UNIT_SECONDS:
        raise _invalid(f"Historical data bar size setting {text!r} is invalid.")
    seconds = int(parts[0]) * _UNIT_SECONDS[parts[1]]
    if seconds not in VALID_BAR_SIZES:
        raise _invalid(f"Historical data bar size setting {text!r} is invalid.")
    return seconds


#: TWS's warning for a date-time without a zone (it then reads it in an implied zone)
IMPLIED_ZONE_CODE = 2174
IMPLIED_ZONE_TEXT = ("Warning: You submitted request with date-time attributes without "
                     "explicit time zone. Please switch to use yyyymmdd-hh:mm:ss in UTC or "
                     "use instrument time zone, like US/Eastern. Implied time zone "
                     "functionality will be removed in the next API release")


def naive_time(text: str) -> bool:
    """True for 'YYYYMMDD HH:MM:SS' without a zone: TWS warns (2174) and implies one."""
    parts = text.split()
    return len(parts) == 2


def parse_end(text: str, zone: str = "UTC") -> float:
    """'' (now), 'YYYYMMDD HH:MM:SS tz', 'YYYYMMDD-HH:MM:SS' (UTC) or 'YYYYMMDD'.

    A time without a zone ('YYYYMMDD HH:MM:SS') is NOT taken as UTC: TWS reads it in an
    implied zone and warns with 2174. The simulator implies ``zone``, the instrument's
    exchange zone (``timeZoneId`` of its contract details; US/Eastern for US stocks), as
    a TWS logged in with that zone does; the caller sends the 2174 warning.
    """
    text = text.strip()
    if not text:
        return time.time()
    try:
        if "-" in text and " " not in text:
            d = dt.datetime.strptime(text, "%Y%m%d-%H:%M:%S").replace(tzinfo=_UTC)
        elif len(text) == 8:
            d = dt.datetime.strptime(text, "%Y%m%d").replace(tzinfo=_UTC)
        else:
            date_part, time_part, *tz = text.split()
            d = dt.datetime.strptime(f"{date_part} {time_part}", "%Y%m%d %H:%M:%S")
            name = tz[0] if tz else zone
            d = d.replace(tzinfo=_UTC if name == "UTC" else ZoneInfo(name))
    except (ValueError, KeyError) as exc:
        raise _invalid(f"end date/time {text!r} is invalid ({exc})") from None
    return d.timestamp()


def parse_request(f: list[str], inst: Instrument) -> HistRequest:
    """[20, reqId, C12, includeExpired, end, barSize, duration, useRTH, what, formatDate,
    (BAG legs), keepUpToDate, chartOptions]."""
    bar = parse_bar_size(f[16])
    m = _DURATION_RE.match(f[17].upper())
    if m is None:
        raise _invalid(f"Historical data duration {f[17]!r} is invalid (e.g. '1 D', '3600 S')")
    n, unit = int(m.group(1)), m.group(2)
    if n <= 0:
        raise _invalid(f"Historical data duration {f[17]!r} must be positive")
    what = f[19].strip().upper() or "TRADES"
    if what not in _WHAT:
        raise _hist_error(f"No data of type {what} is available for {inst.local_symbol}")
    if what in ("TRADES", "ADJUSTED_LAST") and not inst.trades:
        raise _hist_error(f"No data of type {what} is available for {inst.local_symbol} "
                          f"({inst.sec_type}); use MIDPOINT, BID or ASK")
    idx = 21
    if f[4].upper() == "BAG":
        idx += 1 + int(f[21])
    keep = idx < len(f) and f[idx] == "1"
    if keep and f[15].strip():
        raise _invalid("End date not supported with live updates (keepUpToDate=1 needs an "
                       "empty endDateTime)")
    fmt = int(f[20] or 1)
    if fmt not in (1, 2):
        raise _invalid(f"formatDate {fmt} is not 1 or 2")
    end = min(parse_end(f[15], inst.time_zone), time.time())  # no bars from the future
    return HistRequest(end=end, bar_seconds=bar, duration_n=n,
                       duration_unit=unit, use_rth=f[18] == "1", what=what,
                       format_date=fmt, keep_up_to_date=keep)


class PricePath:
    """log-price value noise for one instrument (see module docstring)."""

    def __init__(self, inst: Instrument, seed: int) -> None:
        self.inst = inst
        self.key = stable_seed(seed, inst.con_id, "history")
        vol = _ANNUAL_VOL.get(inst.sec_type, 0.3)
        sigma = vol / math.sqrt(365 * DAY)
        self.amp = [sigma * math.sqrt(2.0**k) * 0.9 for k in range(_OCTAVES)]
        self.sigma = sigma
        self.decimals = inst.price_decimals
        self.tick = inst.min_tick
        # per octave: the lattice index last used and its two end values, so that
        # walking forward bar by bar only rehashes the octaves whose cell changed
        self._idx = [-(1 << 62)] * _OCTAVES
        self._lo = [0.0] * _OCTAVES
        self._hi = [0.0] * _OCTAVES
        self._scale = [float(1 << k) for k in range(_OCTAVES)]
        self._memo_t = math.nan
        self._memo_v = 0.0

    def _u(self, k: int, i: int) -> float:
        """A uniform value in [-1, 1) for lattice point ``i`` of octave ``k`` (splitmix64)."""
        x = (self.key ^ (k << 58) ^ (i & ((1 << 58) - 1))) & _M64
        x = (x + 0x9E3779B97F4A7C15) & _M64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
        x ^= x >> 31
        return (x >> 11) * (2.0 / (1 << 53)) - 1.0

    def raw(self, t: float) -> float:
        """The (unrounded) price at epoch time ``t``."""
        if t == self._memo_t:  # a bar's close is the next bar's open
            return self._memo_v
        lp = 0.0
        idx, lo, hi, amp, scale = self._idx, self._lo, self._hi, self.amp, self._scale
        for k in range(_OCTAVES):
            scaled = t / scale[k]
            i = math.floor(scaled)
            if i != idx[k]:
                if i == idx[k] + 1:
                    lo[k] = hi[k]
                else:
                    lo[k] = self._u(k, i)
                hi[k] = self._u(k, i + 1)
                idx[k] = i
            a = lo[k]
            lp += amp[k] * (a + (hi[k] - a) * (scaled - i))
        v = self.inst.start_price * math.exp(lp)
        self._memo_t, self._memo_v = t, v
        return v

    def rnd(self, px: float) -> float:
        return round(round(px / self.tick) * self.tick, self.decimals)

    def bar(self, start: float, end: float, what: str) -> tuple[float, ...]:
        """(open, high, low, close, volume, wap, count) over [start, end)."""
        o, c = self.raw(start), self.raw(end)
        span = max(1.0, end - start)
        jit = self.sigma * math.sqrt(span) * 0.8
        j1 = abs(self._u(40, int(start) // 1 ^ int(span)))
        j2 = abs(self._u(41, int(start) // 1 ^ int(span)))
        hi = max(o, c) * (1 + j1 * jit)
        lo = min(o, c) * (1 - j2 * jit)
        shift = 0.0
        if what == "BID":
            shift = -self.tick
        elif what == "ASK":
            shift = self.tick
        o, hi, lo, c = (self.rnd(x + shift) for x in (o, hi, lo, c))
        hi, lo = max(hi, o, c), min(lo, o, c)
        if what not in ("TRADES", "ADJUSTED_LAST"):
            return (o, hi, lo, c, -1.0, -1.0, -1)
        u = self._u(42, int(start) ^ int(span))
        lot = max(1, self.inst.lot)
        volume = float(max(1, int(lot * 20 * span * (0.75 + 0.5 * u) / lot) * lot)
                       if span < DAY else int(lot * 20 * 23400 * (0.75 + 0.5 * u)))
        wap = round((o + hi + lo + c) / 4, self.decimals + 2)
        count = max(1, int(volume / lot / 3))
        return (o, hi, lo, c, volume, wap, count)


def _session(inst: Instrument, day: dt.date, rth: bool) -> tuple[float, float] | None:
    """(start, end) epoch seconds of the trading session on ``day``, or None if closed."""
    if day.weekday() >= 5:
        return None
    if rth and inst.sec_type in ("STK", "OPT"):
        tz = ZoneInfo("US/Eastern")
        s = dt.datetime.combine(day, dt.time(9, 30), tz).timestamp()
        return s, s + 6.5 * 3600
    s = dt.datetime.combine(day, dt.time(0, 0), _UTC).timestamp()
    return s, s + DAY


def _bar_starts(inst: Instrument, req: HistRequest) -> list[tuple[float, float]]:
    """Intraday (start, end) pairs, oldest first."""
    bar = req.bar_seconds
    end = req.end
    if not req.use_rth:
        total = req.duration_n * _CAL_SECONDS[req.duration_unit]
        last = math.ceil(end / bar) * bar - bar  # the bar that contains ``end``
        first = math.floor((end - total) / bar) * bar
        return [(t, min(t + bar, end)) for t in range(int(first), int(last) + 1, bar)]
    sess_len = 6.5 * 3600 if inst.sec_type in ("STK", "OPT") else DAY
    if req.duration_unit == "S":
        needed = math.ceil(req.duration_n / bar)
    else:
        needed = math.ceil(req.duration_n * _TRADING_DAYS[req.duration_unit] * sess_len / bar)
    out: list[tuple[float, float]] = []
    day = dt.datetime.fromtimestamp(end, ZoneInfo("US/Eastern")).date()
    for _ in range(4000):
        if len(out) >= needed:
            break
        sess = _session(inst, day, True)
        day -= dt.timedelta(days=1)
        if sess is None:
            continue
        s, e = sess
        starts = [s + j * bar for j in range(math.ceil((e - s) / bar))]
        for t in reversed(starts):
            if t < end and len(out) < needed:
                out.append((t, min(t + bar, e, end)))
    out.reverse()
    return out


def _day_bars(inst: Instrument, req: HistRequest, path: PricePath, days: int | None,
              since: dt.date | None) -> list[tuple[dt.date, tuple[float, ...]]]:
    """Daily bars back from the end date: the last ``days`` sessions, or all since ``since``."""
    out: list[tuple[dt.date, tuple[float, ...]]] = []
    day = dt.datetime.fromtimestamp(req.end, ZoneInfo("US/Eastern")).date()
    while (days is not None and len(out) < days) or (since is not None and day > since):
        sess = _session(inst, day, True)
        if sess is not None and sess[0] < req.end:
            s, e = sess
            out.append((day, path.bar(s, min(e, req.end), req.what)))
        day -= dt.timedelta(days=1)
    out.reverse()
    return out


def _merge(bars: list[tuple[float, ...]]) -> tuple[float, ...]:
    o, c = bars[0][0], bars[-1][3]
    hi = max(b[1] for b in bars)
    lo = min(b[2] for b in bars)
    vol = sum(b[4] for b in bars) if bars[0][4] >= 0 else -1.0
    if vol > 0:
        wap = round(sum(b[5] * b[4] for b in bars) / vol, 6)
        count = sum(int(b[6]) for b in bars)
    else:
        wap, count = -1.0, -1
    return (o, hi, lo, c, vol, wap, count)


def compute_bars(inst: Instrument, req: HistRequest, seed: int,
                 max_bars: int) -> list[tuple[str, tuple[float, ...]]]:
    """(date text, (o, h, l, c, volume, wap, count)) for every bar, oldest first."""
    path = PricePath(inst, seed)
    bar = req.bar_seconds
    if bar < DAY:
        total = req.duration_n * _CAL_SECONDS[req.duration_unit]
        if total / bar > max_bars:
            raise _hist_error(f"Time length exceed max: {total / bar:.0f} bars of {bar} s "
                              f"asked, at most {max_bars}")
        tz = ZoneInfo(inst.time_zone)
        out = []
        for s, e in _bar_starts(inst, req):
            out.append((_fmt_time(s, req.format_date, tz), path.bar(s, e, req.what)))
        return out
    unit, n = req.duration_unit, req.duration_n
    if unit in ("S", "D"):
        days: int | None = max(1, math.ceil(n / DAY)) if unit == "S" else n
        since = None
        approx = days or 0
    else:
        end_day = dt.datetime.fromtimestamp(req.end, ZoneInfo("US/Eastern")).date()
        days = None
        since = end_day - dt.timedelta(days=n * _CAL_SECONDS[unit] // DAY)
        approx = n * _CAL_SECONDS[unit] // DAY
    if approx > max_bars:
        raise _hist_error(f"Time length exceed max: {approx} daily bars asked, at most "
                          f"{max_bars}")
    dailies = _day_bars(inst, req, path, days, since)
    if bar == DAY:
        return [(d.strftime("%Y%m%d"), b) for d, b in dailies]
    groups: dict[tuple[int, int], list[tuple[dt.date, tuple[float, ...]]]] = {}
    for d, b in dailies:
        key = d.isocalendar()[:2] if bar == 7 * DAY else (d.year, d.month)
        groups.setdefault(key, []).append((d, b))
    return [(g[0][0].strftime("%Y%m%d"), _merge([b for _, b in g])) for g in groups.values()]


def _fmt_time(t: float, format_date: int, tz: ZoneInfo) -> str:
    if format_date == 2:
        return str(int(t))
    d = dt.datetime.fromtimestamp(t, tz)
    return d.strftime("%Y%m%d %H:%M:%S ") + str(tz.key)


def reply(req_id: int, inst: Instrument, req: HistRequest, seed: int, max_bars: int) -> bytes:
    """The framed historicalData (17) message."""
    bars = compute_bars(inst, req, seed, max_bars)
    if not bars:
        raise _hist_error("HMDS query returned no data: "
                          f"{inst.local_symbol}@{inst.exchange} {req.what}")
    tz = ZoneInfo(inst.time_zone)
    start = _fmt_time(req.end - req.duration_n * _CAL_SECONDS[req.duration_unit], 1, tz)
    end = _fmt_time(req.end, 1, tz)
    head = frame_payload([17, req_id, start, end, len(bars)])
    rows = []
    for date, (o, h, lo, c, vol, wap, count) in bars:
        rows.append(frame_payload([date, o, h, lo, c, vol, wap, int(count)]))
    body = head + b"".join(rows)
    log.debug("historical %d: %d bars of %d s for %s", req_id, len(bars), req.bar_seconds,
              inst.symbol)
    return pack_len(len(body)) + body


def update_fields(req_id: int, inst: Instrument, req: HistRequest, seed: int,
                  now: float) -> list[object] | None:
    """historicalDataUpdate (90) for the bar containing ``now``."""
    path = PricePath(inst, seed)
    bar = req.bar_seconds
    if bar < DAY:
        start = math.floor(now / bar) * bar
        o, h, lo, c, vol, wap, count = path.bar(start, now, req.what)
        date = _fmt_time(start, req.format_date, ZoneInfo(inst.time_zone))
    else:
        day = dt.datetime.fromtimestamp(now, ZoneInfo("US/Eastern")).date()
        sess = _session(inst, day, True)
        if sess is None or sess[0] >= now:
            return None
        o, h, lo, c, vol, wap, count = path.bar(sess[0], min(now, sess[1]), req.what)
        date = day.strftime("%Y%m%d")
    return [90, req_id, int(count), date, o, c, h, lo, wap, vol]


def req_head_timestamp(s: ClientSession, f: list[str]) -> None:
    """[87, reqId, C12, includeExpired, useRTH, whatToShow, formatDate] -> [88, reqId, ts]."""
    req_id = int(f[1])
    query = parse_c12(f, 2)
    found = s.gateway.universe.resolve(query)
    if len(found) != 1:
        raise RequestError(200, "No security definition has been found for the request")
    inst = found[0]
    what = (f[16] if len(f) > 16 else "TRADES").upper() or "TRADES"
    if what == "TRADES" and not inst.trades:
        raise _hist_error(f"No head time stamp for TRADES of {inst.local_symbol}; use MIDPOINT")
    stamp = inst.head_timestamp
    if len(f) > 17 and f[17] == "2":
        stamp = str(int(dt.datetime.strptime(stamp, "%Y%m%d %H:%M:%S")
                        .replace(tzinfo=_UTC).timestamp()))
    s.send(88, req_id, stamp)


