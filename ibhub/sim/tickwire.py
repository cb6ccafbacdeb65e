"""Wire encoding of streamed market data: tick type tables and the per-event
message tails the streaming engine shares between every subscriber.

A streamed message is ``length + prefix + tail``: the prefix (``1\x006\x00<reqId>\x00``
for tickPrice) is fixed per subscription and the tail (tick type, price, size,
attributes) is built once per market event, from cached price text.
"""

from __future__ import annotations

import time

from ibhub.sim.contracts import Instrument
from ibhub.sim.market import QUOTE, Walk
from ibhub.tws.codec import fmt_float, frame

__all__ = ["DELAYED", "LIVE", "bar_price", "initial_block", "mkt_tails", "size_text",
           "tbt_tail"]

# tick types: (bid, ask, last, bidSize, askSize, lastSize, volume, high, low, close, open)
LIVE = (1, 2, 4, 0, 3, 5, 8, 6, 7, 9, 14)
DELAYED = (66, 67, 68, 69, 70, 71, 74, 72, 73, 75, 76)

_LIVE_TAGS = tuple(f"{t}\0".encode() for t in LIVE)
_DELAYED_TAGS = tuple(f"{t}\0".encode() for t in DELAYED)


def mkt_tails(w: Walk, ev: int, delayed: bool, stamp: bytes | None) -> tuple[bytes, bytes]:
    t = _DELAYED_TAGS if delayed else _LIVE_TAGS
    if ev == QUOTE:
        if stamp is None:
            b = b"".join((t[0], w.text(w.bid), b"\0", size_text(w.bid_size), b"\x001\x00"))
            a = b"".join((t[1], w.text(w.ask), b"\0", size_text(w.ask_size), b"\x001\x00"))
        else:
            b = b"".join((t[0], w.text(w.bid), b"\0", stamp, b"\x001\x00"))
            a = b"".join((t[1], w.text(w.ask), b"\0", stamp, b"\x001\x00"))
        # a quote moving up sends the ask first, so a reader applying the ticks one
        # by one never sees a crossed book (bid >= ask) in between
        return (a, b) if w.up else (b, a)
    size = stamp if stamp is not None else size_text(w.last_size)
    return (b"".join((t[2], w.text(w.last), b"\0", size, b"\x000\x00")),
            b"".join((t[6], str(w.volume).encode(), b"\0")))


_SIZES: dict[int, bytes] = {}


def size_text(n: int) -> bytes:
    s = _SIZES.get(n)
    if s is None:
        s = str(n).encode()
        if len(_SIZES) < 10_000:
            _SIZES[n] = s
    return s


def tbt_tail(w: Walk, ev: int, kind: int, now_s: int) -> bytes | None:
    if kind in (1, 2):
        if ev == QUOTE:
            return None
        exch = w.inst.primary_exchange or w.inst.exchange
        return (f"{kind}\0{now_s}\0{fmt_float(w.price(w.last))}\0{w.last_size}\x000\0"
                f"{exch}\0\0").encode()
    if ev != QUOTE:
        return None
    if kind == 3:
        return (f"3\0{now_s}\0{fmt_float(w.price(w.bid))}\0{fmt_float(w.price(w.ask))}\0"
                f"{w.bid_size}\0{w.ask_size}\x000\0").encode()
    mid = round((w.bid + w.ask) * w.min_tick / 2, w.decimals + 1)
    return f"4\0{now_s}\0{fmt_float(mid)}\0".encode()


def initial_block(inst: Instrument, w: Walk, rid: int, delayed: bool) -> bytes:
    """What reqMktData answers at once: tickReqParams, marketDataType, the current
    bid/ask/last with sizes, volume, high/low/close/open and lastTimestamp."""
    t = DELAYED if delayed else LIVE
    msgs = [
        frame([81, rid, inst.min_tick, "9c0001", 3]),
        frame([58, 1, rid, 3 if delayed else 1]),
        frame([1, 6, rid, t[0], w.price(w.bid), w.bid_size, 1]),
        frame([1, 6, rid, t[1], w.price(w.ask), w.ask_size, 1]),
    ]
    if inst.trades:
        msgs += [frame([1, 6, rid, t[2], w.price(w.last), w.last_size, 0]),
                 frame([2, 6, rid, t[6], w.volume])]
    msgs += [frame([1, 6, rid, t[7], w.price(w.high), 0, 0]),
             frame([1, 6, rid, t[8], w.price(w.low), 0, 0]),
             frame([1, 6, rid, t[9], w.price(w.start), 0, 0]),
             frame([1, 6, rid, t[10], w.price(w.open), 0, 0])]
    if inst.trades:
        # lastTimestamp: 45 live, 88 delayed
        msgs.append(frame([46, 6, rid, 88 if delayed else 45, int(time.time())]))
    return b"".join(msgs)


def bar_price(what: str, w: Walk) -> float:
    """The price a real-time bar of ``what`` follows."""
    if what == "TRADES":
        return w.price(w.last)
    if what == "BID":
        return w.price(w.bid)
    if what == "ASK":
        return w.price(w.ask)
    return round((w.bid + w.ask) * w.min_tick / 2, w.decimals + 1)
