"""reqHistoricalTicks (96) in the simulator: ticks read off the historical price path.

The ticks come from the same deterministic path as the historical bars
(:class:`ibhub.sim.history.PricePath`), so a tick at 10:15:03 lies inside the
10:15 one-minute bar's range's neighbourhood and the same request always returns
the same ticks. Ticks are a seeded 1 to 4 seconds apart.

As IB: exactly one of startDateTime / endDateTime is given; at most 1000 ticks;
whatToShow is TRADES (historicalTicksLast, 98), BID_ASK (historicalTicksBidAsk, 97)
or MIDPOINT (historicalTicks, 96); an instrument without trades (forex) has no
TRADES ticks (error 162). The whole answer is one message with ``done`` = 1. A time
without a zone is read in the instrument's zone with warning 2174, as for bars
(:func:`ibhub.sim.history.parse_end`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

from ibhub.sim import history
from ibhub.sim.contracts import Instrument, parse_c12
from ibhub.sim.handlers import NO_SECURITY
from ibhub.sim.market import stable_seed
from ibhub.sim.session import ClientSession, Handler, RequestError

if TYPE_CHECKING:
    from ibhub.sim.server import SimGateway

__all__ = ["MAX_TICKS", "handlers", "tick_times"]

MAX_TICKS: Final = 1000
_REPLY: Final = {"MIDPOINT": 96, "BID_ASK": 97, "TRADES": 98}


def _invalid(text: str) -> RequestError:
    return RequestError(321, f"Error validating request.-'bY' : cause - {text}")


def tick_times(key: int, start: float | None, end: float | None, n: int) -> list[int]:
    """``n`` tick times (epoch seconds, ascending) from ``start`` forward or back from
    ``end``; the gaps (1 to 4 s) are a pure function of ``key`` and the second."""
    out: list[int] = []
    if start is not None:
        t = int(start)
        limit = int(time.time())
        while len(out) < n and t <= limit:
            out.append(t)
            t += 1 + stable_seed(key, t) % 4
        return out
    assert end is not None
    t = int(end)
    while len(out) < n:
        out.append(t)
        t -= 1 + stable_seed(key, t) % 4
    out.reverse()
    return out


def _instrument(gw: SimGateway, f: list[str]) -> Instrument:
    found = gw.universe.resolve(parse_c12(f, 2))
    if len(found) != 1:
        raise RequestError(200, NO_SECURITY)
    return found[0]


def req_historical_ticks(gw: SimGateway, s: ClientSession, f: list[str]) -> None:
    """[96, reqId, C12, includeExpired, start, end, numberOfTicks, whatToShow, useRth,
    ignoreSize, miscOptions]."""
    req_id = int(f[1])
    inst = _instrument(gw, f)
    start_text, end_text = f[15].strip(), f[16].strip()
    if bool(start_text) == bool(end_text):
        raise _invalid("exactly one of startDateTime and endDateTime must be given")
    n = int(f[17] or 0)
    if not 1 <= n <= MAX_TICKS:
        raise _invalid(f"numberOfTicks {n} is not between 1 and {MAX_TICKS}")
    what = f[18].strip().upper()
    msg_id = _REPLY.get(what)
    if msg_id is None:
        raise _invalid(f"whatToShow {what!r} is not TRADES, BID_ASK or MIDPOINT")
    if what == "TRADES" and not inst.trades:
        raise RequestError(162, "Historical Market Data Service error message:No data of "
                                f"type TRADES is available for {inst.local_symbol} "
                                f"({inst.sec_type}); use MIDPOINT or BID_ASK")
    text = start_text or end_text
    if history.naive_time(text):
        s.send_error(req_id, history.IMPLIED_ZONE_CODE, history.IMPLIED_ZONE_TEXT)
    at = history.parse_end(text, inst.time_zone)
    at = min(at, time.time())
    key = stable_seed(gw.config.seed, inst.con_id, "ticks")
    times = tick_times(key, at if start_text else None, None if start_text else at, n)
    path = history.PricePath(inst, gw.config.seed)
    tick = inst.min_tick
    fields: list[object] = [msg_id, req_id, len(times)]
    for t in times:
        mid = path.raw(float(t))
        size = float(inst.lot * (1 + stable_seed(key, t, "size") % 10))
        if what == "MIDPOINT":
            fields += (t, 0, path.rnd(mid), 0)
        elif what == "BID_ASK":
            bid = path.rnd(mid - tick / 2)
            fields += (t, 0, bid, round(bid + tick, inst.price_decimals), size,
                       float(inst.lot * (1 + stable_seed(key, t, "ask") % 10)))
        else:
            fields += (t, 0, path.rnd(mid), size, inst.exchange or "SMART", "")
    fields.append(1)  # done
    s.send(*fields)


def handlers(gw: SimGateway) -> dict[int, Handler]:
    return {96: lambda s, f: req_historical_ticks(gw, s, f)}
