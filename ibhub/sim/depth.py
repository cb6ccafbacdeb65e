"""Market depth in the simulator: a seeded order book per instrument.

Requests: ``reqMktDepth`` (10), ``cancelMktDepth`` (11) and ``reqMktDepthExchanges``
(82). The book is built around the instrument's walk (:class:`ibhub.sim.market.Walk`):
level 0 is the walk's bid / ask (with its sizes), level ``i`` lies ``i`` ticks further
out with a size drawn from a per-instrument seeded generator, so two runs with the
same seed see the same books. Each market event of a watched instrument rebuilds the
book and sends, per subscriber, only the rows that changed, as IB does:

* a new subscription gets every row as an *insert* (operation 0);
* a row whose price or size changed afterwards is an *update* (operation 1);
* ``isSmartDepth=1`` streams ``updateMktDepthL2`` (13) with a
  market maker (the exchange the row rests on) and ``isSmartDepth`` 1; otherwise
  ``updateMktDepth`` (12).

IB's limit: an account gets :data:`MAX_DEPTH` depth subscriptions at once (across
every API client of the login, SimConfig.max_depth); the next is refused with error
309 on its request id, as the Gateway does.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from ibhub.sim.contracts import Instrument, parse_c12
from ibhub.sim.handlers import NO_SECURITY
from ibhub.sim.market import Quote, Walk, stable_seed
from ibhub.sim.session import ClientSession, Handler, RequestError
from ibhub.tws.codec import frame

if TYPE_CHECKING:
    from ibhub.sim.server import SimGateway

__all__ = ["DEPTH_EXCHANGES", "MAX_ROWS", "DepthEngine", "book_rows"]

log = logging.getLogger(__name__)

#: the most rows one request may ask for (IB's books are at most this deep per side)
MAX_ROWS: Final = 20
#: reqMktDepthExchanges: (exchange, secType, listingExch, serviceDataType, aggGroup)
DEPTH_EXCHANGES: Final = (
    ("NASDAQ", "STK", "", "Deep2", 0),
    ("ARCA", "STK", "", "Deep", 0),
    ("IEX", "STK", "", "Deep", 0),
    ("CME", "FUT", "", "Deep", 2),
    ("IDEALPRO", "CASH", "", "Deep", 4),
)
_MAKERS: Final = {"STK": ("NASDAQ", "ARCA", "IEX"), "FUT": ("CME",), "CASH": ("IDEALPRO",)}

Row = tuple[float, float, str]  # price, size, market maker


def book_rows(w: Walk, rng: random.Random, rows: int) -> tuple[list[Row], list[Row]]:
    """(bids, asks), ``rows`` levels each, best first, around the walk's quote."""
    makers = _MAKERS.get(w.inst.sec_type, ("SMART",))
    bids: list[Row] = []
    asks: list[Row] = []
    for i in range(rows):
        if i == 0:
            bsize, asize = float(w.bid_size), float(w.ask_size)
        else:
            bsize = float(w.lot * (1 + int(rng.random() * 30)))
            asize = float(w.lot * (1 + int(rng.random() * 30)))
        if w.bid - i >= 1:
            bids.append((w.price(w.bid - i), bsize, makers[i % len(makers)]))
        asks.append((w.price(w.ask + i), asize, makers[(i + 1) % len(makers)]))
    return bids, asks


@dataclass(eq=False, slots=True)
class _DepthSub:
    session: ClientSession
    req_id: int
    inst: Instrument
    rows: int
    smart: bool
    sent: dict[tuple[int, int], Row] = field(default_factory=dict)  # (side, pos) -> row


class DepthEngine:
    """Every depth subscription of the simulated Gateway and the books they watch."""

    def __init__(self, gateway: SimGateway) -> None:
        self.gateway = gateway
        self._subs: dict[tuple[ClientSession, int], _DepthSub] = {}
        self._rngs: dict[int, random.Random] = {}
        self._listening = False

    def handlers(self) -> dict[int, Handler]:
        return {10: self.req_mkt_depth, 11: self.cancel_mkt_depth,
                82: self.req_mkt_depth_exchanges}

    @property
    def in_use(self) -> int:
        return len(self._subs)

    def subscriptions(self) -> list[tuple[int, int, int, bool]]:
        """(clientId, reqId, conId, smart) of every live depth subscription (tests)."""
        return [(d.session.client_id, d.req_id, d.inst.con_id, d.smart)
                for d in self._subs.values()]

    # -- requests ----------------------------------------------------------------
    def req_mkt_depth(self, s: ClientSession, f: list[str]) -> None:
        """[10, 5, reqId, C12, numRows, isSmartDepth, mktDepthOptions]."""
        req_id = int(f[2])
        query = parse_c12(f, 3)
        found = self.gateway.universe.resolve(query)
        if len(found) != 1:
            raise RequestError(200, NO_SECURITY if not found else
                               f"The contract description specified for {query.symbol} "
                               "is ambiguous.")
        inst = found[0]
        rows = int(f[15] or 0)
        if not 1 <= rows <= MAX_ROWS:
            raise RequestError(321, f"Error validating request.-'10' : cause - numRows "
                                    f"{rows} is not between 1 and {MAX_ROWS}")
        smart = f[16] == "1"
        if (s, req_id) in self._subs:
            raise RequestError(322, "Error processing request.-'bW' : cause - Duplicate "
                                    f"ticker id {req_id}")
        limit = self.gateway.config.max_depth
        if len(self._subs) >= limit:
            log.info("client %d: depth limit %d reached (reqId %d)", s.client_id, limit,
                     req_id)
            raise RequestError(309, f"Max number ({limit}) of market depth requests has "
                                    "been reached")
        sub = _DepthSub(s, req_id, inst, rows, smart)
        self._subs[(s, req_id)] = sub
        self.gateway.market.acquire(inst.con_id)
        self._listen(True)
        self._send(sub, self.gateway.market.walk(inst.con_id))

    def cancel_mkt_depth(self, s: ClientSession, f: list[str]) -> None:
        """[11, 1, reqId, isSmartDepth]."""
        sub = self._subs.pop((s, int(f[2])), None)
        if sub is None:
            log.debug("client %d cancelled unknown depth request %s", s.client_id, f[2])
            return
        self._forget(sub)

    def req_mkt_depth_exchanges(self, s: ClientSession, f: list[str]) -> None:
        """[82] -> mktDepthExchanges (80): n, (exchange, secType, listing, type, agg)*n."""
        flat: list[object] = []
        for row in DEPTH_EXCHANGES:
            flat.extend(row)
        s.send(80, len(DEPTH_EXCHANGES), *flat)

    # -- lifecycle -----------------------------------------------------------------
    def drop_session(self, session: ClientSession) -> None:
        for key in [k for k in self._subs if k[0] is session]:
            self._forget(self._subs.pop(key))

    def drop_all(self) -> None:
        for sub in list(self._subs.values()):
            self._forget(sub)
        self._subs.clear()

    def _forget(self, sub: _DepthSub) -> None:
        self.gateway.market.release(sub.inst.con_id)
        if not self._subs:
            self._listen(False)

    def _listen(self, on: bool) -> None:
        market = self.gateway.market
        if on and not self._listening:
            market.add_listener(self._on_quote)
        elif not on and self._listening:
            market.remove_listener(self._on_quote)
        self._listening = on

    # -- streaming ------------------------------------------------------------------
    def _on_quote(self, con_id: int, _quote: Quote) -> None:
        subs = [d for d in self._subs.values() if d.inst.con_id == con_id]
        if subs:
            w = self.gateway.market.walk(con_id)
            for sub in subs:
                self._send(sub, w)

    def _rng(self, con_id: int) -> random.Random:
        rng = self._rngs.get(con_id)
        if rng is None:
            rng = self._rngs[con_id] = random.Random(
                stable_seed(self.gateway.config.seed, con_id, "depth"))
        return rng

    def _send(self, sub: _DepthSub, w: Walk) -> None:
        """The rows that changed since the last send, in one write (one Gateway read)."""
        s = sub.session
        if s.closed or s.paused:
            return  # a reader that is behind catches up with the next full diff
        bids, asks = book_rows(w, self._rng(w.con_id), sub.rows)
        out: list[bytes] = []
        for side, rows in ((1, bids), (0, asks)):
            for pos, row in enumerate(rows):
                old = sub.sent.get((side, pos))
                if old != row:
                    sub.sent[(side, pos)] = row
                    out.append(_row(sub, pos, 0 if old is None else 1, side, row))
            for pos in range(sub.rows - 1, len(rows) - 1, -1):  # a side that got shorter
                gone = sub.sent.pop((side, pos), None)
                if gone is not None:
                    out.append(_row(sub, pos, 2, side, gone))
        if out:
            s.write_raw(b"".join(out))


def _row(sub: _DepthSub, pos: int, op: int, side: int, row: Row) -> bytes:
    if sub.smart:
        return frame((13, 1, sub.req_id, pos, row[2], op, side, row[0], row[1], 1))
    return frame((12, 1, sub.req_id, pos, op, side, row[0], row[1]))
