"""Market depth through the front door: every script's reqMktDepth on the hub's ONE
shared SMART book per instrument (:mod:`ibhub.hub.depth`).

``reqMktDepth`` joins the instrument's depth line through the market-data service
(``kind="depth"``), the same line SDK subscribers of ``kind="depth"`` hold, so however
many scripts watch a book the Gateway sees one depth subscription and the account's
depth budget (``depth_max``, IB's 3) counts it once. Beyond the budget the script gets
error 309, the Gateway's own answer.

Each request gets a :class:`DepthTap` in the book's ``taps``: after every Gateway read
that changed the book it compares the book's first ``numRows`` rows with what it sent
this script and sends the difference as the Gateway does: inserts for new rows,
updates for changed ones, deletes for rows that went away; ``updateMktDepthL2`` (13,
with the market maker) for ``isSmartDepth=1``, ``updateMktDepth`` (12) otherwise.
A new reader gets the current book at once as inserts.

Decision: a non-SMART request (``isSmartDepth=0``) is served from the same SMART book
(rows without market makers) rather than opening a second, per-exchange subscription
that would spend another of the account's three; docs/tws-front-door.md says so.
``cancelMktDepth`` or a disconnect lets go of the line (``MarketData.cancel``).

``reqMktDepthExchanges`` (82, no request id) is asked of the Gateway once through the
hub's session and answered from that (cached for the hub's life).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Final

from ibhub.frontdoor.requests import NOT_CONNECTED
from ibhub.frontdoor.session import DownstreamSession
from ibhub.tws.contracts import parse_c12

if TYPE_CHECKING:
    from ibhub.frontdoor.market import MarketData

log = logging.getLogger(__name__)

MAX_ROWS: Final = 20
EXCHANGES_TIMEOUT: Final = 10.0

Row = tuple[float, float, str]


class DepthTap:
    """One downstream request's view of a shared book (an entry of ``DepthStream.taps``)."""

    __slots__ = ("outs", "rid", "rows", "s", "sent", "smart")

    def __init__(self, s: DownstreamSession, rid: int, rows: int, smart: bool) -> None:
        self.s = s
        self.rid = rid
        self.rows = rows
        self.smart = smart
        self.sent: dict[int, list[Row]] = {0: [], 1: []}  # side -> rows this script has
        self.outs = {(s, rid): None}  # MarketData._release's view: who reads this tap

    def remove(self, s: DownstreamSession, rid: int) -> None:
        self.outs.pop((s, rid), None)

    def book(self, bids: list[Row], asks: list[Row]) -> None:
        s = self.s
        if not self.outs or s.closed or s.paused:
            return  # a reader that is behind gets the whole difference with the next book
        for side, rows in ((1, bids), (0, asks)):
            sent = self.sent[side]
            new = rows[: self.rows]
            for pos, row in enumerate(new):
                if pos >= len(sent):
                    self._send(pos, 0, side, row)
                elif sent[pos] != row:
                    self._send(pos, 1, side, row)
            for pos in range(len(sent) - 1, len(new) - 1, -1):  # from the end: positions hold
                self._send(pos, 2, side, sent[pos])
            self.sent[side] = list(new)

    def _send(self, pos: int, op: int, side: int, row: Row) -> None:
        if self.smart:
            self.s.send(13, 1, self.rid, pos, row[2], op, side, row[0], row[1], 1)
        else:
            self.s.send(12, 1, self.rid, pos, op, side, row[0], row[1])


async def req_mkt_depth(market: MarketData, s: DownstreamSession, f: list[str]) -> None:
    """[10, 5, reqId, C12, numRows, isSmartDepth, mktDepthOptions]."""
    rid = int(f[2])
    q = parse_c12(f, 3)
    rows = int(f[15] or 0)
    if not 1 <= rows <= MAX_ROWS:
        s.send_error(rid, 321, f"Error validating request.-'10' : cause - numRows {rows} "
                               f"is not between 1 and {MAX_ROWS}")
        return
    smart = f[16] == "1"
    tap = DepthTap(s, rid, rows, smart)

    def tap_for(stream: Any) -> DepthTap:
        stream.taps = (*stream.taps, tap)
        return tap

    line = await market.join(s, rid, q, "depth", tap_for)
    if line is None:
        return
    stream = line.sub.stream
    if stream.bids or stream.asks:
        tap.book(stream.bids, stream.asks)


#: mktDepthExchanges with no exchange: what a script gets when the Gateway cannot answer,
#: so its request ends (ib_insync and ib_async wait for this reply, not for an error)
EMPTY_EXCHANGES: list[object] = [80, 0]


class DepthExchanges:
    """reqMktDepthExchanges: the Gateway's answer, asked once and kept."""

    def __init__(self, door: Any) -> None:
        self._door = door
        self._fields: list[object] | None = None

    async def request(self, s: DownstreamSession, f: list[str]) -> None:
        if self._fields is None:
            up = self._door.hub.upstream
            ib = up.ib if up is not None and up.connected else None
            if ib is None:
                s.send_error(-1, NOT_CONNECTED, "reqMktDepthExchanges: the hub is not "
                                                "connected to the Gateway; an empty answer "
                                                "ends the request")
                s.send_fields(EMPTY_EXCHANGES)  # an error on -1 ends nothing (idless.py)
                return
            try:
                async with asyncio.timeout(EXCHANGES_TIMEOUT):
                    found = await ib.reqMktDepthExchangesAsync()
            except (TimeoutError, ConnectionError) as exc:
                s.send_error(-1, NOT_CONNECTED, f"reqMktDepthExchanges: no answer from the "
                                                f"Gateway ({exc or 'timed out'}); an empty "
                                                f"answer ends the request")
                s.send_fields(EMPTY_EXCHANGES)
                return
            fields: list[object] = [80, len(found)]
            for d in found:
                fields += (d.exchange, d.secType, d.listingExch, d.serviceDataType,
                           d.aggGroup)
            self._fields = fields
        s.send_fields(self._fields)
