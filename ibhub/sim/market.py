"""Seeded market: one random walk per instrument, stepped by the streaming engine.

Each instrument's walk has its own ``random.Random`` seeded from ``(seed, conId)``
through BLAKE2 (never Python's salted ``hash()``), so the n-th step of an instrument
is the same in every run with the same seed, whatever else is subscribed.

A step is one market event: a quote change (bid and ask move together, the spread
and sizes are redrawn) or, for instruments that trade, a trade at the bid or ask.
Prices are kept as integer multiples of the instrument's min tick, so they print
exactly. A weak pull towards the start price keeps a long run from drifting away.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable
from typing import Any, NamedTuple

from ibhub.sim.contracts import Instrument, Universe
from ibhub.tws.codec import fmt_float

__all__ = ["QUOTE", "TRADE", "Market", "Quote", "Walk", "stable_seed"]

log = logging.getLogger(__name__)

QUOTE = 0
TRADE = 1


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from the parts, identical across processes and Python versions."""
    text = ":".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


class Quote(NamedTuple):
    bid: float
    ask: float
    last: float
    bid_size: float
    ask_size: float
    last_size: float
    volume: float


class Walk:
    """The state of one instrument's market (prices in integer ticks)."""

    __slots__ = (
        "_prices",
        "_texts",
        "ask",
        "ask_size",
        "bid",
        "bid_size",
        "con_id",
        "decimals",
        "high",
        "inst",
        "last",
        "last_size",
        "lot",
        "low",
        "max_spread",
        "min_tick",
        "open",
        "rng",
        "start",
        "steps",
        "trade_p",
        "up",
        "volume",
    )

    def __init__(self, inst: Instrument, seed: int) -> None:
        self.inst = inst
        self.con_id = inst.con_id
        self.rng = random.Random(stable_seed(seed, inst.con_id))
        self.min_tick = inst.min_tick
        self.decimals = inst.price_decimals
        self.start = max(1, round(inst.start_price / inst.min_tick))
        self.max_spread = max(1, inst.max_spread_ticks)
        self.lot = inst.lot
        self.trade_p = 0.3 if inst.trades else 0.0
        self.bid = self.start
        self.ask = self.start + 1
        self.bid_size = 5 * self.lot
        self.ask_size = 5 * self.lot
        self.last = self.start if inst.trades else 0
        self.last_size = self.lot if inst.trades else 0
        self.volume = 0
        self.open = self.start
        self.high = self.start
        self.low = self.start
        self.steps = 0
        self.up = False  # last quote event moved the bid up (send the ask first)
        self._prices: dict[int, float] = {}
        self._texts: dict[int, bytes] = {}

    def price(self, ticks: int) -> float:
        px = self._prices.get(ticks)
        if px is None:
            px = self._prices[ticks] = round(ticks * self.min_tick, self.decimals)
        return px

    def text(self, ticks: int) -> bytes:
        """The wire text of a price in ticks (cached: a walk revisits the same prices)."""
        t = self._texts.get(ticks)
        if t is None:
            t = self._texts[ticks] = fmt_float(self.price(ticks)).encode()
        return t

    def step(self) -> int:
        """Advance one event; returns QUOTE or TRADE."""
        rng = self.rng.random
        self.steps += 1
        if rng() < self.trade_p:
            at_ask = rng() < 0.5
            self.last = self.ask if at_ask else self.bid
            self.last_size = self.lot * (1 + int(rng() * 5))
            self.volume += self.last_size
            if self.last > self.high:
                self.high = self.last
            elif self.last < self.low:
                self.low = self.last
            return TRADE
        # mean reversion: the further from the start, the likelier a step back
        drift = (self.bid - self.start) / (0.2 * self.start)
        p_up = 0.5 - 0.2 * max(-1.0, min(1.0, drift))
        u = rng()
        old_ask = self.ask
        if u < 0.8 * p_up:
            self.bid += 1
        elif u > 1.0 - 0.8 * (1.0 - p_up) and self.bid > 1:
            self.bid -= 1
        self.ask = self.bid + 1 + int(rng() * self.max_spread)
        self.up = self.bid >= old_ask or self.ask > old_ask
        self.bid_size = self.lot * (1 + int(rng() * 20))
        self.ask_size = self.lot * (1 + int(rng() * 20))
        if not self.inst.trades:
            mid = (self.bid + self.ask) // 2
            if mid > self.high:
                self.high = mid
            elif mid < self.low:
                self.low = mid
        return QUOTE

    def quote(self) -> Quote:
        return Quote(self.price(self.bid), self.price(self.ask),
                     self.price(self.last) if self.last else float("nan"),
                     float(self.bid_size), float(self.ask_size), float(self.last_size),
                     float(self.volume))


class Market:
    """All walks, the set of instruments that keep walking, and step listeners."""

    def __init__(self, seed: int, universe: Universe,
                 replay: tuple[dict[int, Any], Any] | None = None) -> None:
        self.seed = seed
        self.universe = universe
        # (tapes per conId, ReplayClock) when replaying a recording (sim/replay.py)
        self.tapes: dict[int, Any] = replay[0] if replay is not None else {}
        self.clock: Any = replay[1] if replay is not None else None
        self._walks: dict[int, Walk] = {}
        self.active: dict[int, int] = {}  # con_id -> holders (subscriptions, resting orders)
        self._listeners: list[Callable[[int, Quote], None]] = []

    def walk(self, con_id: int) -> Walk:
        w = self._walks.get(con_id)
        if w is None:
            inst = self.universe.by_con_id(con_id)
            if inst is None:
                raise KeyError(f"conId {con_id} is not in the simulator's universe")
            tape = self.tapes.get(con_id)
            if tape is not None:
                from ibhub.sim.replay import ReplayWalk

                w = self._walks[con_id] = ReplayWalk(inst, self.seed, tape)
            else:
                w = self._walks[con_id] = Walk(inst, self.seed)
        return w

    def quote(self, con_id: int) -> Quote:
        return self.walk(con_id).quote()

    def acquire(self, con_id: int) -> None:
        """Keep ``con_id`` walking (a subscription or a resting order needs it)."""
        self.walk(con_id)
        self.active[con_id] = self.active.get(con_id, 0) + 1
        if self.clock is not None and con_id in self.tapes:
            self.clock.start()

    def release(self, con_id: int) -> None:
        n = self.active.get(con_id, 0) - 1
        if n > 0:
            self.active[con_id] = n
        else:
            self.active.pop(con_id, None)

    def add_listener(self, fn: Callable[[int, Quote], None]) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[int, Quote], None]) -> None:
        self._listeners.remove(fn)

    def step(self, con_id: int) -> int:
        """One event for ``con_id`` (QUOTE or TRADE); listeners see the new quote."""
        w = self._walks[con_id]
        event = w.step()
        if self._listeners:
            self.notify(w)
        return event

    def notify(self, w: Walk) -> None:
        q = w.quote()
        for fn in self._listeners:
            try:
                fn(w.con_id, q)
            except Exception:
                log.exception("market listener %r failed for conId %d", fn, w.con_id)
