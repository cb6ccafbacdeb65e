"""Replay a recording (``ibhub record``, docs/recording.md) through the simulator.

With ``SimConfig.replay`` set, each recorded instrument's walk is a ``ReplayWalk``:
a step applies the next recorded tick (the hub's top of book after one upstream
tick) instead of a random move, so every client (the hub, an unmodified TWS script)
receives the recorded prices and sizes as tickPrice / tickSize messages, and the
broker fills orders against the recorded quotes. Instruments the recording does
not hold stand still at their start price.

Timing: the replay clock starts when the first recorded instrument is subscribed
(so a script that connects first sees the day from its beginning); a tick is due
when ``(its ts - the first ts) / speed`` has elapsed (``speed = 0``: as fast as
the readers take them, under the simulator's flow control). The ticks themselves,
and so every client's stream, depend only on the recording and the window, never
on timing: two replays of the same data give identical streams.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ibhub.sim.contracts import Instrument, Universe
from ibhub.sim.market import QUOTE, TRADE, Walk

log = logging.getLogger(__name__)

_FIELDS = ("ts", "bid", "ask", "last", "bid_size", "ask_size", "last_size", "volume")


@dataclass(frozen=True)
class ReplaySpec:
    """What to replay: a recording directory, a speed, a window, symbols."""

    directory: str
    speed: float = 1.0  # 1 = recorded spacing, 10 = ten times faster, 0 = max
    start_ns: int | None = None  # only ticks with ts >= start (UTC ns)
    end_ns: int | None = None  # and ts < end
    symbols: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.speed < 0:
            raise ValueError(f"replay speed must be >= 0 (0 = max), got {self.speed}")
        if self.start_ns is not None and self.end_ns is not None and self.end_ns <= self.start_ns:
            raise ValueError("the replay window ends before it starts")


def parse_speed(text: str) -> float:
    """``1``, ``10``, ``2.5`` or ``max`` (0)."""
    if text.strip().lower() == "max":
        return 0.0
    try:
        speed = float(text)
    except ValueError:
        raise ValueError(f"--speed must be a number or 'max', got {text!r}") from None
    if speed <= 0 or math.isnan(speed):
        raise ValueError(f"--speed must be > 0 (or 'max'), got {text!r}")
    return speed


def parse_time(text: str | None) -> int | None:
    """An ISO 8601 time (UTC unless it names a zone) as epoch nanoseconds."""
    if text is None:
        return None
    import datetime as dt

    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r} (e.g. 2026-12-07T14:30)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1e9)


class Tape:
    """One instrument's recorded ticks, columns as plain lists, in sequence order."""

    __slots__ = _FIELDS

    def __init__(self, columns: dict[str, list[Any]]) -> None:
        self.ts: list[int] = columns["ts"]
        self.bid: list[float] = columns["bid"]
        self.ask: list[float] = columns["ask"]
        self.last: list[float] = columns["last"]
        self.bid_size: list[float] = columns["bid_size"]
        self.ask_size: list[float] = columns["ask_size"]
        self.last_size: list[float] = columns["last_size"]
        self.volume: list[float] = columns["volume"]

    def __len__(self) -> int:
        return len(self.ts)


def load_tapes(spec: ReplaySpec, universe: Universe) -> dict[int, Tape]:
    """The recording's ticks per conId of the simulator's universe, in the window."""
    import pyarrow.compute as pc

    from ibhub.record import format as fmt

    root = Path(spec.directory)
    if not fmt.parts(root, "ticks"):
        raise ValueError(f"{root} holds no recorded ticks (expected {root}/kind=ticks/...)")
    table = fmt.read_kind(root, "ticks", columns=["topic", "seq", "con_id", "symbol", *_FIELDS])
    ts = table["ts"].cast("int64")
    mask = None
    if spec.start_ns is not None:
        mask = pc.greater_equal(ts, spec.start_ns)
    if spec.end_ns is not None:
        upper = pc.less(ts, spec.end_ns)
        mask = upper if mask is None else pc.and_(mask, upper)
    if mask is not None:
        table = table.filter(mask)
    table = table.sort_by([("con_id", "ascending"), ("seq", "ascending")]) \
        if table.num_rows else table
    tapes: dict[int, Tape] = {}
    skipped: set[str] = set()
    con_ids = table["con_id"].to_pylist()
    symbols = table["symbol"].cast("string").to_pylist()
    cols = {name: (table[name].cast("int64") if name == "ts" else table[name]).to_pylist()
            for name in _FIELDS}
    start = 0
    for i in range(1, len(con_ids) + 1):
        if i < len(con_ids) and con_ids[i] == con_ids[start]:
            continue
        con_id, symbol = con_ids[start], symbols[start]
        if spec.symbols is not None and symbol not in spec.symbols:
            pass
        elif universe.by_con_id(con_id) is None:
            skipped.add(f"{symbol} ({con_id})")
        else:
            tapes[con_id] = Tape({name: cols[name][start:i] for name in _FIELDS})
        start = i
    if skipped:
        log.warning("replay: %d recorded instrument(s) are not in the simulator's universe "
                    "and are skipped: %s", len(skipped), ", ".join(sorted(skipped)))
    if not tapes:
        raise ValueError(f"nothing to replay in {root} for this window and these symbols")
    return tapes


class ReplayClock:
    """When each tape's ticks are due: recorded spacing scaled by ``speed``."""

    def __init__(self, tapes: dict[int, Tape], speed: float) -> None:
        self.speed = speed
        self.first_ts = min(tape.ts[0] for tape in tapes.values())
        self.started: float | None = None  # monotonic, at the first subscription

    def start(self) -> None:
        if self.started is None:
            self.started = time.monotonic()
            log.info("replay started (speed %s)", self.speed or "max")

    def horizon(self) -> float:
        """Recorded ts (ns) up to which ticks are due now."""
        if self.started is None:
            return -math.inf
        if self.speed == 0:
            return math.inf
        return self.first_ts + (time.monotonic() - self.started) * self.speed * 1e9


class ReplayWalk(Walk):
    """A walk whose steps are the recorded ticks of one instrument."""

    __slots__ = ("_split", "done", "pos", "tape")

    def __init__(self, inst: Instrument, seed: int, tape: Tape) -> None:
        super().__init__(inst, seed)
        self.tape = tape
        self.pos = 0
        self.done = False
        self._split: int | None = None  # a row whose quote part is still to send
        self.trade_p = 0.0
        self._apply(0)  # the book before the replay starts: the first recorded state
        self.open = self.high = self.low = self.bid

    def due(self, horizon: float, cap: int) -> int:
        """Steps whose time has come (at most ``cap`` and what is left)."""
        ts, pos = self.tape.ts, self.pos
        n = 0
        end = min(len(ts), pos + cap)
        while pos + n < end and ts[pos + n] <= horizon:
            n += 1
        return n + (self._split is not None)

    def step(self) -> int:
        """Apply the next recorded tick. A row that changed the trade and the quote
        at once (the first row after a recorded gap, say) takes two steps, TRADE then
        QUOTE, so a client sees every recorded price."""
        split = self._split
        if split is not None:
            self._split = None
            self._apply(split, trade=False)
            return QUOTE
        t = self.tape
        i = self.pos
        if i >= len(t.ts):
            return QUOTE
        self.pos += 1
        self.steps += 1
        traded = i > 0 and _changed(t, i, (t.last, t.last_size, t.volume))
        quoted = i == 0 or _changed(t, i, (t.bid, t.ask, t.bid_size, t.ask_size))
        if self.pos >= len(t.ts):
            self.done = True
            log.info("replay of conId %d finished (%d ticks)", self.con_id, len(t.ts))
        if traded:
            self._apply(i, quote=False)
            if quoted:
                self._split = i
            if self.last > self.high:
                self.high = self.last
            elif self.last < self.low:
                self.low = self.last
            return TRADE
        self._apply(i, trade=False)
        return QUOTE

    def _apply(self, i: int, *, quote: bool = True, trade: bool = True) -> None:
        t = self.tape
        step = self.min_tick
        if quote:
            old_ask = self.ask
            if _known(t.bid[i]):
                self.bid = max(1, round(t.bid[i] / step))
            if _known(t.ask[i]):
                self.ask = round(t.ask[i] / step)  # as recorded, even locked or crossed
            if _known(t.bid_size[i]):
                self.bid_size = int(t.bid_size[i])
            if _known(t.ask_size[i]):
                self.ask_size = int(t.ask_size[i])
            self.up = self.bid >= old_ask or self.ask > old_ask
        if trade:
            if _known(t.last[i]):
                self.last = round(t.last[i] / step)
            if _known(t.last_size[i]):
                self.last_size = int(t.last_size[i])
            if _known(t.volume[i]):
                self.volume = int(t.volume[i])


def _changed(t: Tape, i: int, columns: tuple[list[float], ...]) -> bool:
    return any(col[i] != col[i - 1] and _known(col[i]) for col in columns)


def _known(x: float | None) -> bool:
    return x is not None and not math.isnan(x)
