"""Market data beyond the top of book: option computations and generic tick lists.

A ``reqMktData`` for an option gets ``tickOptionComputation`` (21) for its bid, ask,
last and model (tick types 10/11/12/13, delayed 80-83), computed by the option model
(:mod:`ibhub.sim.options`) from the option's own quotes and its underlying's price.
A generic tick list asks for more; the ids served here, with what they send:

======  ==================================================  ============================
 id      meaning                                              ticks
======  ==================================================  ============================
 100     option volume (underlying: the chain's; option:     tickSize 29 call / 30 put
         its own)
 101     option open interest (same)                         tickSize 27 call / 28 put
 104     historical volatility                               tickGeneric 23
 106     implied volatility (underlying: ATM; option: own)   tickGeneric 24
 165     misc. stats: 13/26/52-week low/high, avg volume     tickPrice 15-20, tickSize 21
 233     RTVolume, then one per trade                        tickString 48
 236     shortable                                           tickGeneric 46, tickSize 89
 411     real-time historical volatility                     tickGeneric 58
 456     dividends                                           tickString 59
 588     futures open interest                               tickSize 86
======  ==================================================  ============================

Other ids the Gateway knows (``IB_GENERIC_TICKS``) and the ``mdoff`` keyword are
accepted and send nothing; an id the Gateway does not know is refused as it does, with
321 naming the legal ones. Values are deterministic: drawn from the simulator's seed
and the contract, or computed.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable

from ibhub.sim.contracts import Instrument, Universe
from ibhub.sim.market import QUOTE, Market, Walk, stable_seed
from ibhub.sim.options import Greeks, bs_greeks, implied_vol, model_vol, years_to_expiry
from ibhub.tws.codec import frame

__all__ = ["GENERIC_TICKS", "ExtraTicks", "computation_fields", "parse_generic_ticks"]

GENERIC_TICKS: dict[int, str] = {
    100: "Option Volume", 101: "Option Open Interest", 104: "Historical Volatility",
    106: "Option Implied Volatility", 165: "Misc. Stats", 233: "RTVolume",
    236: "Shortable", 411: "Realtime Historical Volatility", 456: "IBDividends",
    588: "Futures Open Interest",
}
#: Generic tick ids a Gateway accepts (its "legal ones" list); those not in GENERIC_TICKS
#: are accepted and not simulated.
IB_GENERIC_TICKS = frozenset({
    100, 101, 104, 105, 106, 107, 125, 162, 165, 166, 221, 225, 232, 233, 236, 256, 258,
    291, 292, 293, 294, 295, 318, 370, 375, 377, 381, 384, 387, 388, 391, 407, 411, 428,
    439, 456, 459, 460, 499, 506, 511, 512, 513, 514, 515, 516, 517, 521, 545, 576, 577,
    578, 584, 585, 587, 588, 595, 614, 619, 623, 662, 663, 664,
})
KEYWORDS = frozenset({"mdoff"})
OPTIONS = ("OPT", "FOP")
NOT_COMPUTED_VOL = -1.0  # IB's marker for an implied vol / price it could not compute
NOT_COMPUTED_GREEK = -2.0
_GREEK_TYPES = {False: (10, 11, 12, 13), True: (80, 81, 82, 83)}


def parse_generic_ticks(text: str, inst: Instrument) -> frozenset[int]:
    """The ids of a genericTickList; ValueError (answered 321) names the illegal one."""
    out = set()
    for part in text.split(","):
        part = part.strip()
        if not part or part.lower() in KEYWORDS:
            continue
        if not (part.isascii() and part.isdigit()) or int(part) not in IB_GENERIC_TICKS:
            legal = ",".join(f"{k}({v})" for k, v in GENERIC_TICKS.items())
            raise ValueError(f"Incorrect generic tick list of {text}.  Legal ones for "
                             f"({inst.sec_type}) are: {legal}")
        if int(part) in GENERIC_TICKS:
            out.add(int(part))
    return frozenset(out)


def computation_fields(req_id: int, tick_type: int, g: Greeks | None, opt_price: float,
                       und_price: float) -> list[object]:
    """tickOptionComputation (21) at sv 176: 12 fields, no version, a tickAttrib of 1
    (price based). ``g`` None sends IB's "not computed" markers."""
    if g is None:
        return [21, req_id, tick_type, 1, NOT_COMPUTED_VOL, NOT_COMPUTED_GREEK, opt_price,
                NOT_COMPUTED_VOL, NOT_COMPUTED_GREEK, NOT_COMPUTED_GREEK, NOT_COMPUTED_GREEK,
                und_price]
    return [21, req_id, tick_type, 1, round(g.implied_vol, 6), round(g.delta, 6),
            round(g.opt_price, 4), g.pv_dividend, round(g.gamma, 6), round(g.vega, 6),
            round(g.theta, 6), round(g.und_price, 4)]


def greeks_at(inst: Instrument, price: float, spot: float,
              now: dt.datetime | None = None) -> Greeks | None:
    """The computation for an option traded at ``price`` with the underlying at ``spot``."""
    t = years_to_expiry(inst.last_trade_date, now)
    iv = implied_vol(inst.right, price, spot, inst.strike, t)
    if iv is None:
        return None
    g = bs_greeks(inst.right, spot, inst.strike, t, iv)
    return g._replace(opt_price=price)


def underlying_price(market: Market, inst: Instrument) -> float:
    """The underlying's mid (its walk; the start price if nobody watches it)."""
    w = market.walk(inst.under_con_id)
    return round((w.bid + w.ask) * w.min_tick / 2, w.decimals + 1)


#: seconds between one option's computations of each kind (quote: bid/ask/model; trade)
GREEKS_INTERVAL = 0.25


class ExtraTicks:
    """What one market-data request gets beyond the top of book (see module doc)."""

    __slots__ = ("_delayed", "_due", "_inst", "_market", "_rid", "_rt_total", "_rt_value",
                 "_universe", "generic", "option")

    def __init__(self, market: Market, universe: Universe, inst: Instrument, req_id: int,
                 generic: frozenset[int], delayed: bool) -> None:
        self._market = market
        self._universe = universe
        self._inst = inst
        self._rid = req_id
        self.generic = generic
        self._delayed = delayed
        self.option = inst.sec_type in OPTIONS and inst.under_con_id != 0
        self._rt_total = 0.0  # RTVolume's running volume and price x volume
        self._rt_value = 0.0
        self._due = [0.0, 0.0]  # monotonic time of the next quote / trade computations

    @staticmethod
    def wanted(inst: Instrument, generic: frozenset[int]) -> bool:
        return bool(generic) or (inst.sec_type in OPTIONS and inst.under_con_id != 0)

    # -- at subscribe -------------------------------------------------------------------
    def initial(self, w: Walk) -> bytes:
        msgs: list[list[object]] = []
        if self.option:
            msgs += self._computations(w, (0, 1, 2, 3))
        rid = self._rid
        inst = self._inst
        g = self.generic
        rng = stable_seed(self._market.seed, inst.con_id, "generic")
        if 100 in g or 101 in g:
            calls, puts = self._option_stats(rng)
            if 100 in g:
                msgs += [[2, 6, rid, 29, calls[0]], [2, 6, rid, 30, puts[0]]]
            if 101 in g:
                msgs += [[2, 6, rid, 27, calls[1]], [2, 6, rid, 28, puts[1]]]
        base_vol = model_vol(inst.under_symbol or inst.symbol, 0.0, 0.0)
        if 104 in g:
            msgs.append([45, 6, rid, 23, round(base_vol * (0.85 + (rng % 20) / 100), 6)])
        if 106 in g:
            msgs.append([45, 6, rid, 24, round(self._implied(w, base_vol), 6)])
        if 165 in g:
            px = w.price(w.start)
            for n, (lo, hi) in enumerate(((0.92, 1.06), (0.87, 1.09), (0.78, 1.12))):
                msgs += [[1, 6, rid, 15 + 2 * n, round(px * lo, w.decimals), 0, 0],
                         [1, 6, rid, 16 + 2 * n, round(px * hi, w.decimals), 0, 0]]
            msgs.append([2, 6, rid, 21, 1_000_000 + rng % 50_000_000])
        if 233 in g and w.last:
            msgs.append([46, 6, rid, 48, self._rt_volume(w)])
        if 236 in g and inst.sec_type == "STK":
            msgs += [[45, 6, rid, 46, 3.0], [2, 6, rid, 89, 10_000_000 + rng % 90_000_000]]
        if 411 in g:
            msgs.append([45, 6, rid, 58, round(base_vol * 1.05, 6)])
        if 456 in g and inst.sec_type == "STK":
            nxt = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=40)).strftime("%Y%m%d")
            amount = round(w.price(w.start) * 0.003, 4)
            msgs.append([46, 6, rid, 59, f"{amount * 4:.4f},{amount * 4:.4f},{nxt},{amount}"])
        if 588 in g and inst.sec_type == "FUT":
            msgs.append([2, 6, rid, 86, 2_000_000 + rng % 500_000])
        return b"".join(frame(m) for m in msgs)

    def _option_stats(self, rng: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """((call volume, call OI), (put volume, put OI)): an option's own, or the sum
        of the chain for an underlying."""
        inst = self._inst
        if inst.sec_type in OPTIONS:
            vol = 100 + rng % 5_000 + int(self._market.walk(inst.con_id).volume)
            oi = 500 + rng % 20_000
            own = (vol, oi)
            return (own, (0, 0)) if inst.right == "C" else ((0, 0), own)
        chain = [i for i in self._universe if i.under_con_id == inst.con_id
                 and i.sec_type in OPTIONS]
        calls = [0, 0]
        puts = [0, 0]
        for opt in chain:
            r = stable_seed(self._market.seed, opt.con_id, "oi")
            side = calls if opt.right == "C" else puts
            side[0] += 100 + r % 5_000
            side[1] += 500 + r % 20_000
        return (calls[0], calls[1]), (puts[0], puts[1])

    def _implied(self, w: Walk, base_vol: float) -> float:
        if self.option:
            g = greeks_at(self._inst, _mid(w), underlying_price(self._market, self._inst))
            return g.implied_vol if g is not None else base_vol
        return base_vol

    # -- per market event ---------------------------------------------------------------
    def on_event(self, w: Walk, ev: int) -> bytes:
        """Messages after one market event (the option's greeks, RTVolume on a trade)."""
        msgs: list[list[object]] = []
        if self.option:
            # IB throttles its option computations (a few a second, not one per quote);
            # each costs three implied-vol solves here, so the simulator does the same
            kind = 0 if ev == QUOTE else 1
            now = time.monotonic()
            if now >= self._due[kind]:
                self._due[kind] = now + GREEKS_INTERVAL
                msgs += self._computations(w, (0, 1, 3) if ev == QUOTE else (2,))
        if ev != QUOTE and 233 in self.generic:
            msgs.append([46, 6, self._rid, 48, self._rt_volume(w)])
        return b"".join(frame(m) for m in msgs) if msgs else b""

    def _computations(self, w: Walk, which: Iterable[int]) -> list[list[object]]:
        spot = underlying_price(self._market, self._inst)
        types = _GREEK_TYPES[self._delayed]
        now = dt.datetime.now(dt.UTC)
        out = []
        for k in which:
            if k == 2 and not w.last:
                continue
            price = (w.price(w.bid), w.price(w.ask), w.price(w.last), _mid(w))[k]
            out.append(computation_fields(self._rid, types[k],
                                          greeks_at(self._inst, price, spot, now), price, spot))
        return out

    def _rt_volume(self, w: Walk) -> str:
        """``price;size;ms;totalVolume;vwap;singleTrade`` of the last trade."""
        px = w.price(w.last)
        self._rt_total += w.last_size
        self._rt_value += w.last_size * px
        vwap = self._rt_value / self._rt_total if self._rt_total else px
        return (f"{px};{w.last_size};{time.time_ns() // 1_000_000};{int(w.volume)};"
                f"{round(vwap, w.decimals + 2)};true")


def _mid(w: Walk) -> float:
    return round((w.bid + w.ask) * w.min_tick / 2, w.decimals + 1)
