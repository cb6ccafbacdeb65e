"""Tick-by-tick in the hub: one shared upstream stream per instrument and type.

However many scripts (SDK ``subscribe(..., kind="tbt.BidAsk")`` or front-door
``reqTickByTickData``) watch an instrument's tick-by-tick data of one type, the
Gateway sees one ``reqTickByTickData`` (a market-data line of the hub's budget, as IB
counts it). :class:`TbtStream` is that line's sink: each upstream tickByTick (99)
message is published as one :class:`~ibhub.protocol.TickByTick` on
``tbt.<type>.<instrument>`` and handed, as its raw fields, to the front door's taps,
which put each script's own request id in front of the unchanged tail (one format per
tick, one write per script). Tick-by-tick is sparse next to top-of-book ticks (one
message per trade or quote change, no size-only updates), so each tick is published at
once rather than batched per read.
"""

from __future__ import annotations

import math
import time
from typing import Any

from ibhub.hub.line_stream import LineStream
from ibhub.protocol import TickByTick
from ibhub.wire import Publisher, encode

__all__ = ["TbtStream", "parse"]

NAN = math.nan


def parse(f: list[bytes], con_id: int, symbol: str, seq: int, ts: int) -> TickByTick:
    """[99, reqId, tickType, time, ...]: type 1/2 price, size, mask, exchange,
    conditions; type 3 bid, ask, bidSize, askSize, mask; type 4 midPoint."""
    kind = int(f[2])
    t = int(f[3])
    if kind in (1, 2):
        return TickByTick(seq, ts, con_id, symbol, "Last" if kind == 1 else "AllLast", t,
                          float(f[4]), float(f[5]), NAN, NAN, NAN, NAN, int(f[6]),
                          f[7].decode(errors="replace"), f[8].decode(errors="replace"))
    if kind == 3:
        return TickByTick(seq, ts, con_id, symbol, "BidAsk", t, NAN, NAN, float(f[4]),
                          float(f[5]), float(f[6]), float(f[7]), int(f[8]))
    if kind == 4:
        return TickByTick(seq, ts, con_id, symbol, "MidPoint", t, float(f[4]), NAN, NAN, NAN,
                          NAN, NAN, 0)
    raise ValueError(f"unknown tick-by-tick type {kind}")


class TbtStream(LineStream):
    """One shared tick-by-tick line; the upstream session calls :meth:`tbt` per tick."""

    __slots__ = ("kind",)

    def __init__(self, topic: Any, con_id: int, symbol: str, kind: str,
                 publisher: Publisher) -> None:
        # taps: the front door's readers, tap.tbt(tail) with the message's bytes after
        # the request id (NUL-separated, NUL-terminated)
        super().__init__(topic, con_id, symbol, publisher)
        self.kind = kind  # "Last", "AllLast", "BidAsk", "MidPoint"

    def tbt(self, f: list[bytes]) -> None:
        topic = self._topic
        ts = time.time_ns()
        event = parse(f, self.con_id, self.symbol, topic.seq + 1, ts)
        topic.seq += 1
        self.ticks += 1
        self.last_ts = ts
        payload = encode(event)
        topic.last = payload
        self._publish(topic.key, payload)
        if self.taps:
            tail = b"\0".join(f[2:])
            for tap in self.taps:
                tap.tbt(tail)
