"""Tick-by-tick through the front door: scripts share the hub's one upstream stream per
instrument and type (:mod:`ibhub.hub.tbt`), with the SDK's subscribers.

``reqTickByTickData`` with ``numberOfTicks=0`` and ``ignoreSize=0`` (what ib_insync,
ib_async and most ibapi scripts send) joins the line ``tbt.<type>`` through the
market-data service: the Gateway sees one request however many scripts watch, and the
line counts once against the hub's line budget. Every upstream tickByTick (99) is sent
to each script with its own request id in front of the Gateway's unchanged fields
(:class:`TbtTap`). ``cancelTickByTickData`` or a disconnect lets go of the line.

Decision: a request with ``numberOfTicks > 0`` (the Gateway first sends that many
historical ticks, then streams) or ``ignoreSize=1`` (BidAsk ticks only when a price
changes) is that script's own: it is passed through to the Gateway with its id
remapped (:mod:`ibhub.frontdoor.passthrough`), as before, and answered exactly as the
Gateway answers it. An unknown tick type is passed through too: the Gateway's error
is the faithful answer.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from ibhub.frontdoor.session import DownstreamSession
from ibhub.hub.subscriptions import TBT_TYPES
from ibhub.tws.contracts import parse_c12

if TYPE_CHECKING:
    from ibhub.frontdoor.market import MarketData
    from ibhub.frontdoor.passthrough import Passthrough

_LEN = struct.Struct(">I")


class TbtTap:
    """A shared tick-by-tick line's downstream readers (one tap per line)."""

    __slots__ = ("_outs", "outs")

    def __init__(self) -> None:
        self.outs: dict[tuple[DownstreamSession, int], bytes] = {}
        self._outs: list[tuple[DownstreamSession, bytes]] = []

    def add(self, s: DownstreamSession, rid: int) -> None:
        self.outs[(s, rid)] = b"99\0%d\0" % rid
        self._outs = [(s, p) for (s, _), p in self.outs.items()]

    def remove(self, s: DownstreamSession, rid: int) -> None:
        self.outs.pop((s, rid), None)
        self._outs = [(s, p) for (s, _), p in self.outs.items()]

    def tbt(self, tail: bytes) -> None:
        n = len(tail)
        pack = _LEN.pack
        for s, prefix in self._outs:
            if not s.paused:
                s.write(pack(len(prefix) + n) + prefix + tail)


def _tap_of(stream: Any) -> TbtTap:
    for tap in stream.taps:
        if isinstance(tap, TbtTap):
            return tap
    tap = TbtTap()
    stream.taps = (*stream.taps, tap)
    return tap


async def request(market: MarketData, passthrough: Passthrough, s: DownstreamSession,
                  f: list[str]) -> None:
    """[97, reqId, C12, tickType, numberOfTicks, ignoreSize]."""
    rid = int(f[1])
    kind = f[14]
    if kind not in TBT_TYPES or f[15] not in ("0", "") or f[16] not in ("0", ""):
        passthrough.request(s, f)
        return

    def tap_for(stream: Any) -> TbtTap:
        tap = _tap_of(stream)
        tap.add(s, rid)
        return tap

    await market.join(s, rid, parse_c12(f, 2), f"tbt.{kind}", tap_for)
